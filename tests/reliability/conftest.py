"""The reliability suite runs the services as processes against the real stack, on per-run topics."""

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "chaos: the long part of the reliability suite, run by `make chaos`")


def pytest_collection_modifyitems(config, items):
    # `make test` runs the fast part; `make chaos` runs the whole suite, so its table has every fault
    if config.getoption("--chaos", default=False) or "chaos" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="long reliability test: run `make chaos`")
    for item in items:
        if "chaos" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    from support.chaos import ROWS, table

    if ROWS:
        terminalreporter.write_sep("=", "reliability: faults injected")
        terminalreporter.write_line(table())
