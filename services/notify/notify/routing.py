"""The routing tree of `routes.yaml`, with Prometheus Alertmanager's semantics.

A node matches an alert when all its matchers do; its children are tried in order and the first matching child
takes the alert, unless that child says `continue: true`, in which case the next siblings are tried too. A node
none of whose children matched handles the alert itself. Children inherit receiver and grouping settings.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

import re2
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Matchers come from operators over the silences API as well as from routes.yaml, and run on every alert: RE2
# matches in time linear in the input (no backtracking, so `(a+)+b` cannot explode), and its memory is capped.
# Patterns RE2 cannot run in linear time (back-references, look-around) are refused.
RE2_OPTIONS = re2.Options()
RE2_OPTIONS.max_mem = 1 << 20  # bytes of compiled program; a pattern needing more is refused
RE2_OPTIONS.log_errors = False  # a refused pattern is the caller's 400, not a line on stderr
MATCHER_VALUE_MAX = 1024
MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(=~|!~|!=|=)\s*(?:"(.*)"|(\S*))\s*$')


class Matcher(BaseModel):
    """One label matcher; the same shape as Alertmanager's API v2 (`isRegex`, `isEqual`)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    name: str = Field(min_length=1, max_length=128)
    value: str = Field(max_length=MATCHER_VALUE_MAX)
    is_regex: bool = Field(False, alias="isRegex")
    is_equal: bool = Field(True, alias="isEqual")

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parses Alertmanager's text form: `name="value"`, `name!="v"`, `name=~"re"`, `name!~"re"`."""
        m = MATCHER.match(text)
        if not m:
            raise ValueError(f"bad matcher {text!r}: expected name=\"value\", name!=, name=~ or name!~")
        name, op, quoted, bare = m.groups()
        return cls(name=name, value=quoted if quoted is not None else bare,
                   is_regex="~" in op, is_equal=op.startswith("="))

    @model_validator(mode="after")
    def _regex_compiles(self) -> Matcher:
        if self.is_regex:
            _compile(self.value)
        return self

    @cached_property
    def _pattern(self):
        return _compile(self.value)

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        hit = bool(self._pattern.fullmatch(actual)) if self.is_regex else actual == self.value
        return hit == self.is_equal


def _compile(pattern: str):
    try:
        return re2.compile(pattern, RE2_OPTIONS)
    except re2.error as e:
        reason = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueError(f"bad regular expression {pattern[:80]!r} (RE2 syntax, no back-references or "
                         f"look-around): {reason}") from None


def alert_labels(alert: dict) -> dict[str, str]:
    """The labels routes and silences match on: the alert's fields, `stream` as a short name for `stream_id`,
    and its attributes (which never override a field)."""
    fields = {k: str(alert[k]) for k in ("severity", "stream_id", "source", "tenant", "metric", "action",
                                         "detector", "model_version") if alert.get(k) is not None}
    return {**(alert.get("attributes") or {}), **fields, "stream": fields.get("stream_id", "")}


class RateLimit(BaseModel):
    max_rate: float = Field(gt=0)
    period_seconds: float = Field(60, gt=0)


class Receiver(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    type: Literal["pagerduty", "slack"]
    routing_key_env: str | None = None  # pagerduty: the integration key's variable
    webhook_url_env: str | None = None  # slack: the incoming webhook URL's variable
    rate_limit: RateLimit | None = None

    def secret(self) -> str | None:
        """The routing key or webhook URL, read from the environment at call time (never stored)."""
        var = self.routing_key_env if self.type == "pagerduty" else self.webhook_url_env
        return os.environ.get(var) if var else None

    @property
    def secret_env(self) -> str:
        return (self.routing_key_env if self.type == "pagerduty" else self.webhook_url_env) or "(none)"


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    receiver: str | None = None
    matchers: list[Matcher] = []
    continue_: bool = Field(False, alias="continue")
    group_by: list[str] | None = None
    group_wait: float | None = None
    group_interval: float | None = None
    routes: list[Route] = []

    @field_validator("matchers", mode="before")
    @classmethod
    def _parse_matchers(cls, value):
        return [Matcher.parse(v) if isinstance(v, str) else v for v in value or []]

    @field_validator("group_wait", "group_interval", mode="before")
    @classmethod
    def _duration(cls, value):
        return parse_duration(value) if isinstance(value, str) else value


class Match(BaseModel):
    """Where one alert goes: a receiver and the grouping of the route that sent it there."""

    model_config = ConfigDict(frozen=True)

    receiver: str
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float


DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")


def parse_duration(text: str) -> float:
    m = DURATION.match(text.strip())
    if not m:
        raise ValueError(f"bad duration {text!r}: expected e.g. 500ms, 30s, 5m, 1h")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


class RoutingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    receivers: list[Receiver]
    route: Route

    @classmethod
    def load(cls, path: Path) -> RoutingConfig:
        config = cls.model_validate(yaml.safe_load(Path(path).read_text()))
        config.check()
        return config

    def check(self) -> None:
        known = {r.name for r in self.receivers}
        if len(known) != len(self.receivers):
            raise ValueError("receiver names must be unique")
        if not self.route.receiver:
            raise ValueError("the root route needs a default receiver")

        def walk(route: Route) -> None:
            if route.receiver and route.receiver not in known:
                raise ValueError(f"route names unknown receiver {route.receiver!r}")
            for child in route.routes:
                walk(child)
        walk(self.route)

    @cached_property
    def by_name(self) -> dict[str, Receiver]:
        return {r.name: r for r in self.receivers}

    def match(self, labels: dict[str, str]) -> list[Match]:
        root = Match(receiver=self.route.receiver, group_by=tuple(self.route.group_by or ("stream_id",)),
                     group_wait=self.route.group_wait if self.route.group_wait is not None else 30.0,
                     group_interval=self.route.group_interval if self.route.group_interval is not None else 300.0)
        found = _walk(self.route, root, labels)
        unique: dict[str, Match] = {}
        for m in found:  # one delivery per receiver even when several routes lead to it
            unique.setdefault(m.receiver, m)
        return list(unique.values())


def _walk(route: Route, inherited: Match, labels: dict[str, str]) -> list[Match]:
    here = inherited.model_copy(update={k: v for k, v in {
        "receiver": route.receiver, "group_by": tuple(route.group_by) if route.group_by else None,
        "group_wait": route.group_wait, "group_interval": route.group_interval}.items() if v is not None})
    found: list[Match] = []
    for child in route.routes:
        if all(m.matches(labels) for m in child.matchers):
            found += _walk(child, here, labels)
            if not child.continue_:
                break
    return found or [here]
