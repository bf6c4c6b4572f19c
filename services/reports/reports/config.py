"""Report definitions and their cron schedules (reports.yaml), and the portal's users (the users file)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from croniter import croniter
from pydantic import BaseModel, Field, field_validator

from platform_common.auth import validate_tenant

KPI_KINDS = ("event_count", "metric_mean", "metric_max", "anomaly_count", "negative_share", "events_by_source")
_PERIOD = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class Recipients(BaseModel):
    email: list[str] = []
    slack: bool = False


class ReportDefinition(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    tenant: str = "default"
    cron: str
    period: str = "24h"  # the window ending at each fire time: <n>s, <n>m, <n>h, <n>d or <n>w
    streams: list[str] = ["*"]  # stream ids, or "*" for every stream of the tenant
    metrics: list[str] = ["*"]
    kpis: list[str] = list(KPI_KINDS)
    context_query: str | None = None  # what to ask rag for; the title by default
    recipients: Recipients = Recipients()

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"not a cron expression: {value!r}")
        return value

    @field_validator("period")
    @classmethod
    def _period(cls, value: str) -> str:
        if not _PERIOD.match(value):
            raise ValueError(f"period must look like 30s, 30m, 24h, 7d or 1w, not {value!r}")
        return value

    @field_validator("kpis")
    @classmethod
    def _kpis(cls, value: list[str]) -> list[str]:
        unknown = set(value) - set(KPI_KINDS)
        if unknown:
            raise ValueError(f"unknown KPIs {sorted(unknown)}; known: {list(KPI_KINDS)}")
        return value

    @property
    def length(self) -> timedelta:
        found = _PERIOD.match(self.period)
        if found is None:  # the validator lets only matching periods in
            raise ValueError(f"period {self.period!r} is not <n><s|m|h|d|w>")
        n, unit = found.groups()
        return timedelta(**{_UNITS[unit]: int(n)})

    def last_fire(self, now: datetime) -> datetime:
        """The latest scheduled time at or before `now`: the end of the period that is due."""
        return croniter(self.cron, now + timedelta(microseconds=1)).get_prev(datetime)

    def fire_times(self, since: datetime, until: datetime) -> list[datetime]:
        """The scheduled times in (since, until], oldest first: the ends of the periods made in that span."""
        times, schedule = [], croniter(self.cron, since)
        while (at := schedule.get_next(datetime)) <= until:
            times.append(at)
        return times


class User(BaseModel):
    username: str = Field(pattern=r"^[A-Za-z0-9._@-]{1,64}$")
    tenant: str
    password_hash: str  # argon2id, from `python -m reports hash-password`

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        return validate_tenant(value)

    @field_validator("password_hash")
    @classmethod
    def _argon2id(cls, value: str) -> str:
        if not value.startswith("$argon2id$"):
            raise ValueError("password_hash must be an argon2id hash (python -m reports hash-password)")
        return value


class Config(BaseModel):
    """Report definitions (reports.yaml) and the portal's users (a separate file, REPORTS_USERS_FILE, such as a
    mounted Secret: no user ships with the service)."""
    users: list[User] = []
    reports: list[ReportDefinition] = []
    # the users file says it holds development users: the service then refuses to listen beyond loopback
    development_users: bool = False

    @field_validator("users")
    @classmethod
    def _unique(cls, value: list[User]) -> list[User]:
        names = [u.username for u in value]
        if len(names) != len(set(names)):
            raise ValueError("user names must be unique")
        return value

    def definition(self, name: str) -> ReportDefinition:
        for d in self.reports:
            if d.name == name:
                return d
        raise KeyError(f"no report definition {name!r}")


def load_config(path: str | Path, users_file: str | Path | None = None) -> Config:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if raw.get("users"):
        raise ValueError(f"{path}: users do not belong in the report definitions; put them in the users file "
                         "(REPORTS_USERS_FILE)")
    users: dict = {}
    if users_file is not None:
        users = yaml.safe_load(Path(users_file).read_text()) or {}
    return Config.model_validate({"reports": raw.get("reports") or [], "users": users.get("users") or [],
                                  "development_users": bool(users.get("development"))})
