"""The report definitions file: validation with clear messages, schedules, and the shipped file itself."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from reports.config import Config, ReportDefinition, hash_password, load_config, verify_password
from reports.settings import ReportsSettings


def test_the_shipped_config_is_valid():
    config = load_config(ReportsSettings().reports_config)
    assert config.reports and config.users
    assert {d.tenant for d in config.reports} <= {u.tenant for u in config.users}


@pytest.mark.parametrize("field, value, message", [
    ("cron", "every day", "not a cron expression"),
    ("period", "1 day", "period must look like"),
    ("kpis", ["revenue"], "unknown KPIs ['revenue']"),
])
def test_bad_definitions_are_refused_with_the_reason(field, value, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        ReportDefinition(**{"name": "x", "title": "X", "cron": "0 6 * * *", field: value})


def test_the_due_period_ends_at_the_latest_fire_time():
    daily = ReportDefinition(name="d", title="D", cron="0 6 * * *", period="24h")
    now = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    assert daily.last_fire(now) == datetime(2026, 11, 20, 6, tzinfo=UTC)
    assert daily.last_fire(datetime(2026, 11, 20, 6, tzinfo=UTC)) == datetime(2026, 11, 20, 6,
                                                                                        tzinfo=UTC)
    assert daily.length == timedelta(hours=24)


def test_passwords_are_checked_against_their_hash():
    config = Config(users=[{"username": "a", "tenant": "t", "password_hash": hash_password("s3cret", 1000)}])
    assert config.authenticate("a", "s3cret").tenant == "t"
    assert config.authenticate("a", "S3cret") is None and config.authenticate("b", "s3cret") is None
    assert not verify_password("x", "plain-text-password")
