"""Report definitions, their cron schedules and the portal's users, from one YAML file."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from croniter import croniter
from pydantic import BaseModel, Field, field_validator

KPI_KINDS = ("event_count", "metric_mean", "metric_max", "anomaly_count", "negative_share", "events_by_source")
_PERIOD = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class Recipients(BaseModel):
    email: list[str] = []
    slack: bool = False


class ReportDefinition(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    tenant: str = "default"
    cron: str
    period: str = "24h"  # the window ending at each fire time: <n>m, <n>h, <n>d or <n>w
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
            raise ValueError(f"period must look like 30m, 24h, 7d or 1w, not {value!r}")
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
        n, unit = _PERIOD.match(self.period).groups()
        return timedelta(**{_UNITS[unit]: int(n)})

    def last_fire(self, now: datetime) -> datetime:
        """The latest scheduled time at or before `now`: the end of the period that is due."""
        return croniter(self.cron, now + timedelta(microseconds=1)).get_prev(datetime)


class User(BaseModel):
    username: str
    tenant: str
    password_hash: str  # from `python -m reports hash-password`


class Config(BaseModel):
    users: list[User] = []
    reports: list[ReportDefinition] = []

    def definition(self, name: str) -> ReportDefinition:
        for d in self.reports:
            if d.name == name:
                return d
        raise KeyError(f"no report definition {name!r}")

    def authenticate(self, username: str, password: str) -> User | None:
        for user in self.users:
            if hmac.compare_digest(user.username, username) and verify_password(password, user.password_hash):
                return user
        return None


def load_config(path: Path) -> Config:
    return Config.model_validate(yaml.safe_load(Path(path).read_text()) or {})


def hash_password(password: str, iterations: int = 200_000) -> str:
    salt = secrets.token_hex(8)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations).hex()
    return f"pbkdf2_sha256${iterations}${salt}${digest}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), int(iterations)).hex()
    return hmac.compare_digest(candidate, digest)
