"""The rows of the reliability table that `make chaos` prints: one per fault injected. Every cell is counted in
the run that prints it: `found`, `lost` and `duplicated` by reading `output` with read_committed from its beginning
and counting each accepted event id (the place where a repeat can exist), `lost` also over the sinks' rows."""

ROWS: list[dict] = []
COLUMNS = ("fault", "sent", "accepted", "output", "found", "lost", "duplicated", "recovery_s")


def record(**row) -> None:
    missing = set(COLUMNS) - set(row)
    assert not missing and None not in row.values() and "-" not in row.values(), f"unmeasured cells: {row}"
    ROWS.append(row)


def table() -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in ROWS:
        cells = [f"{row.get(c):.1f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
