"""Local stand-ins for PagerDuty's Events API v2 and Slack's incoming webhooks, for tests and the demo.

Each request is checked against the publisher's documented format and answered as the publisher would:
PagerDuty 202 / 400 `invalid event`, Slack 200 `ok` / 400 `invalid_blocks`. They can be told to fail:
`POST /_control/{target}` with `{"status": 500, "times": 3}` (times omitted: always) or
`{"status": 429, "retry_after": 2}`; `DELETE /_control/{target}` heals. `GET /_received/{target}` lists what
was accepted. Targets: `pagerduty`, and `slack/<name>` for a webhook posted to `/slack/<name>`.

    python -m notify.dev_receivers --port 8099
    PagerDuty URL: http://localhost:8099/v2/enqueue   Slack webhook URL: http://localhost:8099/slack/<name>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

log = logging.getLogger("dev_receivers")

PD_ACTIONS = ("trigger", "acknowledge", "resolve")
PD_SEVERITIES = ("critical", "error", "warning", "info")
PD_KEYS = {"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client", "client_url"}
PD_PAYLOAD_KEYS = {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}


def check_pagerduty(event: object) -> list[str]:
    """Problems of an Events API v2 event (developer.pagerduty.com/docs/events-api-v2/trigger-events)."""
    if not isinstance(event, dict):
        return ["the event must be a JSON object"]
    errors = [f"unknown field {k!r}" for k in event.keys() - PD_KEYS]
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("routing_key must be the 32-character integration key")
    action = event.get("event_action")
    if action not in PD_ACTIONS:
        errors.append("event_action must be trigger, acknowledge or resolve")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not 0 < len(dedup) <= 255):
        errors.append("dedup_key must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and dedup is None:
        errors.append(f"dedup_key is required to {action}")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return [*errors, "payload is required to trigger"]
        errors += [f"unknown payload field {k!r}" for k in payload.keys() - PD_PAYLOAD_KEYS]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
            errors.append("payload.summary must be a string of 1 to 1024 characters")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            errors.append("payload.source is required")
        if payload.get("severity") not in PD_SEVERITIES:
            errors.append("payload.severity must be critical, error, warning or info")
        if "timestamp" in payload:
            try:
                datetime.fromisoformat(payload["timestamp"])
            except (TypeError, ValueError):
                errors.append("payload.timestamp must be ISO 8601")
        for name in ("component", "group", "class"):
            if name in payload and not isinstance(payload[name], str):
                errors.append(f"payload.{name} must be a string")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            errors.append("payload.custom_details must be an object")
    for link in event.get("links", []):
        if not isinstance(link, dict) or not isinstance(link.get("href"), str) or \
                not isinstance(link.get("text", ""), str):
            errors.append("links must be objects with an href and an optional text")
    for image in event.get("images", []):
        if not isinstance(image, dict) or not isinstance(image.get("src"), str):
            errors.append("images must be objects with a src")
    return errors


def _text_object(obj: object, where: str, limit: int, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in (("plain_text",) if plain_only else
                                                            ("plain_text", "mrkdwn")):
        return [f"{where} must be a {'plain_text' if plain_only else 'text'} object"]
    text = obj.get("text")
    if not isinstance(text, str) or not 0 < len(text) <= limit:
        return [f"{where}.text must have 1 to {limit} characters"]
    return []


def check_slack(message: object) -> list[str]:
    """Problems of an incoming-webhook message against Block Kit's limits (api.slack.com/reference/block-kit)."""
    if not isinstance(message, dict):
        return ["invalid_payload"]
    errors = []
    text, blocks = message.get("text"), message.get("blocks")
    if text is None and blocks is None:
        return ["no_text"]
    if text is not None and (not isinstance(text, str) or len(text) > 40000):
        errors.append("text must be a string of at most 40000 characters")
    if blocks is None:
        return errors
    if not isinstance(blocks, list) or not 0 < len(blocks) <= 50:
        return [*errors, "blocks must be a list of 1 to 50 blocks"]
    block_ids = [b.get("block_id") for b in blocks if isinstance(b, dict) and "block_id" in b]
    if len(block_ids) != len(set(block_ids)) or any(not isinstance(i, str) or len(i) > 255 for i in block_ids):
        errors.append("block_id values must be unique strings of at most 255 characters")
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "header":
            errors += _text_object(block.get("text"), f"{where}.text", 150, plain_only=True)
        elif kind == "section":
            fields = block.get("fields")
            if "text" not in block and not fields:
                errors.append(f"{where} needs text or fields")
            if "text" in block:
                errors += _text_object(block["text"], f"{where}.text", 3000)
            if fields is not None:
                if not isinstance(fields, list) or not 0 < len(fields) <= 10:
                    errors.append(f"{where}.fields must hold 1 to 10 items")
                else:
                    for j, f in enumerate(fields):
                        errors += _text_object(f, f"{where}.fields[{j}]", 2000)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 10:
                errors.append(f"{where}.elements must hold 1 to 10 items")
            else:
                for j, e in enumerate(elements):
                    if not (isinstance(e, dict) and e.get("type") == "image"):
                        errors += _text_object(e, f"{where}.elements[{j}]", 3000)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 25:
                errors.append(f"{where}.elements must hold 1 to 25 items")
            else:
                for j, e in enumerate(elements):
                    if isinstance(e, dict) and e.get("type") == "button":
                        errors += _text_object(e.get("text"), f"{where}.elements[{j}].text", 75, plain_only=True)
                        if len(e.get("url", "")) > 3000:
                            errors.append(f"{where}.elements[{j}].url is over 3000 characters")
        elif kind != "divider":
            errors.append(f"{where}: unsupported block type {kind!r}")
    return ["invalid_blocks", *errors] if errors else []


@dataclass
class Fault:
    status: int
    times: int | None  # None: until healed
    retry_after: float | None = None


@dataclass
class Call:
    at: float  # time.monotonic()
    status: int
    body: object


@dataclass
class DevReceivers:
    received: dict[str, list] = field(default_factory=dict)  # accepted bodies per target
    calls: dict[str, list[Call]] = field(default_factory=dict)  # every request per target
    faults: dict[str, Fault] = field(default_factory=dict)
    port: int | None = None
    _runner: web.AppRunner | None = None

    def fail(self, target: str, status: int = 500, times: int | None = None, retry_after: float | None = None):
        self.faults[target] = Fault(status, times, retry_after)

    def heal(self, target: str) -> None:
        self.faults.pop(target, None)

    def accepted(self, target: str) -> list:
        return self.received.get(target, [])

    def app(self) -> web.Application:
        app = web.Application(client_max_size=512 * 1024)  # PagerDuty's documented event size limit
        app.add_routes([web.post("/v2/enqueue", self.pagerduty), web.post("/slack/{name}", self.slack),
                        web.post("/_control/{target:.+}", self.control),
                        web.delete("/_control/{target:.+}", self.control),
                        web.get("/_received/{target:.+}", self.list_received)])
        return app

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> int:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the port bound (0 asks for a free one)
        return self.port

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def pagerduty(self, request: web.Request) -> web.Response:
        body, errors = await self._parse(request, check_pagerduty)
        if errors:
            return self._answer("pagerduty", body, 400, {"status": "invalid event", "message":
                                "Event object is invalid", "errors": errors})
        fault = self._fault("pagerduty")
        if fault:
            return fault
        log.info("pagerduty %s dedup_key=%s %s", body["event_action"], body.get("dedup_key"),
                 body.get("payload", {}).get("summary", ""))
        self.received.setdefault("pagerduty", []).append(body)
        return self._answer("pagerduty", body, 202, {"status": "success", "message": "Event processed",
                                                     "dedup_key": body.get("dedup_key")})

    async def slack(self, request: web.Request) -> web.Response:
        target = f"slack/{request.match_info['name']}"
        body, errors = await self._parse(request, check_slack)
        if errors:
            self.calls.setdefault(target, []).append(Call(time.monotonic(), 400, body))
            log.warning("%s rejected: %s", target, "; ".join(errors))
            return web.Response(status=400, text=errors[0])
        fault = self._fault(target)
        if fault:
            return fault
        log.info("%s: %s (%d blocks)", target, body.get("text", ""), len(body.get("blocks", [])))
        self.received.setdefault(target, []).append(body)
        self.calls.setdefault(target, []).append(Call(time.monotonic(), 200, body))
        return web.Response(text="ok")

    async def _parse(self, request: web.Request, check) -> tuple[Any, list[str]]:
        if request.content_type != "application/json":
            return None, ["invalid_payload: Content-Type must be application/json"]
        try:
            body = json.loads(await request.read())
        except ValueError:
            return None, ["invalid_payload: the body is not JSON"]
        return body, check(body)

    def _answer(self, target: str, body: object, status: int, answer: dict) -> web.Response:
        self.calls.setdefault(target, []).append(Call(time.monotonic(), status, body))
        if status >= 400:
            log.warning("%s rejected: %s", target, answer)
        return web.json_response(answer, status=status)

    def _fault(self, target: str) -> web.Response | None:
        fault = self.faults.get(target)
        if fault is None:
            return None
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                del self.faults[target]
        self.calls.setdefault(target, []).append(Call(time.monotonic(), fault.status, None))
        log.info("%s: failing on purpose with %d", target, fault.status)
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
        return web.json_response({"status": "failure", "message": "failing on purpose"}, status=fault.status,
                                 headers=headers)

    async def control(self, request: web.Request) -> web.Response:
        target = request.match_info["target"]
        if request.method == "DELETE":
            self.heal(target)
            return web.json_response({"target": target, "failing": False})
        try:
            spec = await request.json()
            self.fail(target, int(spec.get("status", 500)), spec.get("times"), spec.get("retry_after"))
        except (ValueError, TypeError, AttributeError) as e:
            return web.json_response({"error": "bad_request", "detail": str(e)}, status=400)
        return web.json_response({"target": target, "failing": True})

    async def list_received(self, request: web.Request) -> web.Response:
        return web.json_response(self.accepted(request.match_info["target"]))


async def _serve(port: int) -> None:
    receivers = DevReceivers()
    await receivers.start(port, host="0.0.0.0")
    print(f"PagerDuty Events API v2: http://localhost:{port}/v2/enqueue\n"
          f"Slack webhooks:          http://localhost:{port}/slack/<name>", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        asyncio.run(_serve(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
