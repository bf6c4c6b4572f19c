"""The routing tree and matchers (pure logic)."""

import pytest
from pydantic import ValidationError

from notify.routing import Matcher, RoutingConfig, alert_labels, parse_duration

TREE = {
    "receivers": [{"name": n, "type": "slack", "webhook_url_env": "X"} for n in ("default", "db", "eu", "pager")],
    "route": {
        "receiver": "default", "group_wait": "10s", "group_interval": "1m",
        "routes": [
            {"matchers": ['severity="critical"'], "receiver": "pager", "continue": True, "group_wait": "0s"},
            {"matchers": ['source="db"'], "receiver": "db",
             "routes": [{"matchers": ['region=~"eu-.*"'], "receiver": "eu"}]},
            {"matchers": ['tenant!="internal"', 'stream=~"pay.*"'], "receiver": "eu"},
        ],
    },
}


def route(**alert) -> list[tuple[str, float]]:
    config = RoutingConfig.model_validate(TREE)
    config.check()
    labels = alert_labels({"severity": "warning", "stream_id": "s1", "source": "web", "tenant": "acme", **alert})
    return [(m.receiver, m.group_wait) for m in config.match(labels)]


def test_nothing_matches_goes_to_the_root_receiver():
    assert route() == [("default", 10.0)]


def test_continue_lets_later_siblings_match_too_and_settings_are_inherited():
    assert route(severity="critical", source="db") == [("pager", 0.0), ("db", 10.0)]


def test_first_match_without_continue_stops():
    assert route(source="db", stream_id="payments") == [("db", 10.0)]
    assert route(stream_id="payments") == [("eu", 10.0)]
    assert route(stream_id="payments", tenant="internal") == [("default", 10.0)]


def test_attributes_are_labels_and_deepest_matching_child_wins():
    assert route(source="db", attributes={"region": "eu-west"}) == [("eu", 10.0)]
    assert route(source="db", attributes={"region": "us-east"}) == [("db", 10.0)]
    # an attribute never overrides a field
    assert route(attributes={"severity": "critical"}) == [("default", 10.0)]


@pytest.mark.parametrize("text, labels, expected", [
    ('severity="critical"', {"severity": "critical"}, True),
    ("severity=critical", {"severity": "critical"}, True),
    ('severity!="critical"', {"severity": "critical"}, False),
    ('stream=~"pay.*"', {"stream": "payments"}, True),
    ('stream=~"pay"', {"stream": "payments"}, False),  # anchored, like Alertmanager
    ('stream!~"pay.*"', {"stream": "web"}, True),
    ('missing=""', {}, True),
])
def test_matchers(text, labels, expected):
    assert Matcher.parse(text).matches(labels) is expected


@pytest.mark.parametrize("bad", ["severity", '=~"x"', 'a=~"("'])
def test_bad_matchers_are_refused(bad):
    with pytest.raises((ValueError, ValidationError)):
        Matcher.parse(bad)


def test_unknown_receiver_and_durations_are_refused():
    broken = {**TREE, "route": {**TREE["route"], "routes": [{"receiver": "nobody"}]}}
    with pytest.raises(ValueError, match="nobody"):
        RoutingConfig.model_validate(broken).check()
    assert parse_duration("1500ms") == 1.5 and parse_duration("2m") == 120
    with pytest.raises(ValueError):
        parse_duration("ten seconds")


def test_shipped_routes_file_loads():
    from notify.settings import NotifySettings
    config = RoutingConfig.load(NotifySettings().notify_routes_file)
    assert {r.type for r in config.receivers} == {"pagerduty", "slack"}
