"""The report definitions file: validation with clear messages, schedules, and the shipped file itself."""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from reports.config import Config, ReportDefinition, User, load_config
from reports.settings import ReportsSettings
from reports.signin import Authenticator, hash_password

ROOT = Path(__file__).resolve().parents[3]


def test_the_shipped_config_is_valid_and_ships_no_user():
    config = load_config(ReportsSettings().reports_config)
    assert config.reports and not config.users
    assert "password" not in ReportsSettings().reports_config.read_text()


def test_the_development_users_live_in_deploy_local_and_say_so(tmp_path):
    dev = load_config(ReportsSettings().reports_config, ROOT / "deploy/local/reports-users.yaml")
    assert dev.development_users and {d.tenant for d in dev.reports} <= {u.tenant for u in dev.users}
    # users put back into the definitions file are refused, not loaded
    (tmp_path / "reports.yaml").write_text("reports: []\nusers: [{username: a, tenant: t, password_hash: x}]\n")
    with pytest.raises(ValueError, match="users do not belong"):
        load_config(tmp_path / "reports.yaml")


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


async def test_passwords_are_checked_against_their_argon2id_hash():
    stored = hash_password("s3cret")
    assert stored.startswith("$argon2id$")
    auth = Authenticator(Config(users=[{"username": "a", "tenant": "t", "password_hash": stored}]).users)
    try:
        assert (await auth.authenticate("a", "s3cret")).tenant == "t"
        assert await auth.authenticate("a", "S3cret") is None and await auth.authenticate("b", "s3cret") is None
    finally:
        auth.close()
    # the old PBKDF2 hashes (and plain text, and the reserved shared tenant) are refused when the file is loaded
    for bad in ({"password_hash": "pbkdf2_sha256$1000$ab$cd"}, {"password_hash": "plain"}, {"tenant": "_shared"}):
        with pytest.raises(ValidationError):
            User(**{"username": "a", "tenant": "t", "password_hash": stored, **bad})


def test_the_periods_of_a_span_are_its_fire_times_oldest_first():
    daily = ReportDefinition(name="d", title="D", cron="0 6 * * *", period="24h")
    since, until = datetime(2026, 11, 18, 6, tzinfo=UTC), datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    # (since, until]: the fire time at `since` itself was made before
    assert daily.fire_times(since, until) == [datetime(2026, 11, 19, 6, tzinfo=UTC),
                                              datetime(2026, 11, 20, 6, tzinfo=UTC)]
    quarter = ReportDefinition(name="q", title="Q", cron="* * * * * */15", period="15s")
    assert quarter.length == timedelta(seconds=15)
    assert len(quarter.fire_times(since, since + timedelta(minutes=1))) == 4
