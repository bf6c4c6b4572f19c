"""What notify knows of a receiver type, behind one protocol: a new type is a module with a NOTIFIER and a line here.

The dispatcher and the intake only ask a Notifier how to batch alerts and what request carries them; retries, rate
limits and circuit breaking (delivery.py) are the same for every type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from . import pagerduty, slack
from .settings import NotifySettings

LinksOf = Callable[[dict], list[dict]]


class Notifier(Protocol):
    type: str
    batch_size: int  # alerts per request
    immediate: bool  # one request per alert, at once and in order: no group wait (PagerDuty groups by itself)

    def request(self, secret: str, alerts: list[dict], links_of: LinksOf,
                settings: NotifySettings) -> tuple[str, dict]:
        """The URL and JSON body that deliver `alerts` with the receiver's `secret` (key or webhook URL)."""
        ...


NOTIFIERS: dict[str, Notifier] = {n.type: n for n in (pagerduty.NOTIFIER, slack.NOTIFIER)}
