"""Report runs with the service as a process (`python -m reports`, as `make run` starts it) on the real Kafka and
PostgreSQL, delivering to a real SMTP server (aiosmtpd) and a Slack webhook endpoint: killed in the middle of a
delivery, stopped across periods, and late events. Counted at the receivers and on reports.v1.

The receivers run on the test's event loop, so the test waits for the service on a thread: a blocked loop would hold
the service's Slack post past its timeout and make it post again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import yaml
from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request

from platform_common.kafka import Publisher, dlq, ensure_topics
from platform_common.testing import ServiceProcess, decode_avro, free_port, read_messages
from reports.config import Recipients, ReportDefinition
from reports.projector import projector
from reports.publication import published_record
from reports.scheduler import Scheduler
from reports.store import Store

SECONDS = 15  # one period: the service makes a report every 15 s
DEFINITION = ReportDefinition(name="quarter-minute", title="Quarter-minute operations", tenant="default",
                              cron=f"* * * * * */{SECONDS}", period=f"{SECONDS}s",
                              recipients=Recipients(email=["ops@example.com"], slack=True))
DRAFT = "The period saw {k1} events."


class Inbox:
    """An SMTP receiver that counts what it took, by Message-ID; it can hold the first message before its recipient
    is accepted (the sender then has nothing delivered yet)."""

    def __init__(self, hold_first: bool):
        self.messages: list[str] = []
        self.holding = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not self.release.is_set():
            self.holding.set()
            while not self.release.is_set():
                await asyncio.sleep(0.05)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default)["Message-ID"])
        return "250 OK"

    def counts(self) -> Counter[str]:
        return Counter(m.strip("<>").split("@")[0] for m in self.messages)


@contextlib.asynccontextmanager
async def receivers(h, hold_first: bool = False):
    inbox = Inbox(hold_first)
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    slack = FastAPI()
    slack.state.posts = []

    @slack.post("/hook")
    async def hook(request: Request) -> str:
        slack.state.posts.append((await request.json())["text"])
        return "ok"

    try:
        async with h.serving(slack) as slack_url, h.serving(h.chat_app(DRAFT, DRAFT)) as chat_url, \
                h.serving(h.rag_app(h.PASSAGES)) as rag_url:
            yield inbox, slack.state.posts, {
                "REPORTS_SMTP_HOST": "127.0.0.1", "REPORTS_SMTP_PORT": str(smtp.port),
                "REPORTS_SLACK_WEBHOOK_URL": f"{slack_url}/hook", "REPORTS_LLM_URL": f"{chat_url}/v1",
                "REPORTS_RAG_URL": rag_url, "REPORTS_RAG_API_KEYS": json.dumps({"default": h.RAG_KEY})}
    finally:
        inbox.release.set()
        await asyncio.to_thread(smtp.stop)


def service(rsettings, tmp_path: Path, env: dict[str, str], **overrides: str) -> ServiceProcess:
    config = tmp_path / "reports.yaml"
    config.write_text(yaml.safe_dump({"reports": [DEFINITION.model_dump(mode="json")]}))
    port = free_port()
    return ServiceProcess("reports", "reports", port, {
        "REPORTS_PORT": str(port), "REPORTS_CONFIG": str(config), "REPORTS_DB_SCHEMA": rsettings.reports_db_schema,
        "REPORTS_RAW_TOPIC": rsettings.reports_raw_topic, "REPORTS_ENRICHED_TOPIC": rsettings.reports_enriched_topic,
        "REPORTS_ANOMALIES_TOPIC": rsettings.reports_anomalies_topic, "REPORTS_TOPIC": rsettings.reports_topic,
        "REPORTS_GROUP": rsettings.reports_group, "REPORTS_LLM_BACKEND": "openai", "REPORTS_LLM_MODEL": "stub",
        "REPORTS_INSTANCE_ID": "reports-test", "REPORTS_GRACE_SECONDS": "2", "REPORTS_SCHEDULE_INTERVAL_SECONDS": "1",
        "REPORTS_BACKFILL_HOURS": str(4 * SECONDS / 3600), "REPORTS_LATENESS_HOURS": str(4 * SECONDS / 3600),
        "REPORTS_RETRY_BASE_SECONDS": "1", "OTEL_SDK_DISABLED": "true", **env, **overrides}, tmp_path)


async def until(condition, timeout: float, what: str, proc: ServiceProcess | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await condition():
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f}s" + (f"\n{proc.tail(30)}" if proc else ""))


async def runs(store: Store) -> list[dict]:
    return [dict(r) for r in await store.pool.fetch(
        f"select report_id, period_end, version, reason, state from {store.s}.runs order by period_end, version")]


def published(rsettings) -> Counter[str]:
    messages = read_messages(rsettings, rsettings.reports_topic, 1000, timeout=5)
    return Counter(decode_avro(rsettings, m)["report_id"] for m in messages)


def slack_counts(posts: list[str]) -> Counter[str]:
    return Counter(text.split("/reports/")[1].split("|")[0] for text in posts)


def assert_each_once(rsettings, done: list[dict], inbox: Inbox, posts: list[str]) -> None:
    """Every finished run: once on reports.v1, one email, one Slack message; and no report went out twice (runs
    still under way when the service stopped may have gone out once)."""
    for where, sent in (("reports.v1", published(rsettings)), ("email", inbox.counts()),
                        ("slack", slack_counts(posts))):
        assert all(sent[r["report_id"]] == 1 for r in done), (where, sent)
        assert max(sent.values()) == 1, (where, sent)


@pytest.fixture
async def projections(rsettings):
    store = await Store.connect(rsettings.database_url, rsettings.reports_db_schema)
    await ensure_topics(rsettings, [rsettings.reports_raw_topic, rsettings.reports_enriched_topic,
                                    rsettings.reports_anomalies_topic, rsettings.reports_topic])
    try:
        yield store
    finally:
        await store.drop()
        await store.close()


async def test_killed_between_generation_and_delivery_it_delivers_each_channel_once(rsettings, projections, tmp_path,
                                                                                   h):
    async with receivers(h, hold_first=True) as (inbox, posts, env):
        reports = service(rsettings, tmp_path, env).start()
        try:
            await asyncio.to_thread(reports.wait_ready)
            # the first report was generated and published; its email is in the SMTP receiver's hands
            await until(lambda: asyncio.to_thread(inbox.holding.wait, 0.1), 60, "an email on its way", reports)
            reports.kill()
            [held] = [r for r in await runs(projections) if r["state"] != "done"][:1]
            assert held["state"] == "published" and inbox.messages == []
            inbox.release.set()
            reports = service(rsettings, tmp_path, env).start()
            await asyncio.to_thread(reports.wait_ready)

            async def delivered() -> list[dict] | None:
                done = [r for r in await runs(projections) if r["state"] == "done"]
                return done if held["report_id"] in {r["report_id"] for r in done} else None
            done = await until(delivered, 60, "the held report delivered after the restart", reports)
            await asyncio.to_thread(reports.stop)
            done = [r for r in await runs(projections) if r["state"] == "done"]
        finally:
            reports.kill()
        assert_each_once(rsettings, done, inbox, posts)
        assert inbox.counts()[held["report_id"]] == 1 and slack_counts(posts)[held["report_id"]] == 1


async def test_stopped_across_two_periods_both_are_made_once_at_restart(rsettings, projections, tmp_path, h):
    async with receivers(h) as (inbox, posts, env):
        reports = service(rsettings, tmp_path, env).start()
        try:
            await asyncio.to_thread(reports.wait_ready)
            await until(lambda: runs(projections), 60, "a first report", reports)
            await asyncio.to_thread(reports.stop)
            stopped = datetime.now(UTC)
            # two periods end (and their grace passes) while the service is down
            missed = DEFINITION.fire_times(stopped, stopped + timedelta(seconds=2 * SECONDS))
            await asyncio.sleep(2 * SECONDS + 3)
            reports = service(rsettings, tmp_path, env).start()
            await asyncio.to_thread(reports.wait_ready)

            async def made() -> list[dict] | None:
                rows = await runs(projections)
                ends = {r["period_end"] for r in rows if r["state"] == "done"}
                return rows if set(missed) <= ends else None
            rows = await until(made, 60, f"the missed periods {missed} made", reports)
            await asyncio.to_thread(reports.stop)
            rows = await runs(projections)
        finally:
            reports.kill()
    per_period = Counter(r["period_end"] for r in rows)
    assert all(per_period[end] == 1 for end in missed), per_period
    assert len(missed) == 2 and {r["reason"] for r in rows if r["period_end"] == missed[0]} == {"backfill"}
    assert_each_once(rsettings, [r for r in rows if r["state"] == "done"], inbox, posts)


async def test_late_events_of_a_made_period_make_a_new_version_that_counts_them(rsettings, projections, tmp_path, h):
    async with receivers(h) as (inbox, posts, env):
        reports = service(rsettings, tmp_path, env).start()
        publisher = Publisher(rsettings)
        await publisher.start()
        try:
            await asyncio.to_thread(reports.wait_ready)
            [first, *_] = await until(lambda: runs(projections), 60, "a first report", reports)
            await until(lambda: _state(projections, first["report_id"], "done"), 30, "the first report done", reports)
            report, _, _ = await projections.stored(first["report_id"])
            before = next(f["value"] for f in report["kpis"] if f["label"] == "Events in the period")
            # three events of that period arrive now, late
            for _ in range(3):
                late = h.event("pump-7", first["period_end"] - timedelta(seconds=5), {"temperature": 41.0})
                await publisher.publish(rsettings.reports_raw_topic, late["stream_id"], late, schema_of="events.raw.v1")

            async def remade() -> dict | None:
                rows = [r for r in await runs(projections) if r["period_end"] == first["period_end"]]
                return rows[-1] if len(rows) > 1 and rows[-1]["state"] == "done" else None
            second = await until(remade, 60, "a new version of the period", reports)
            await asyncio.to_thread(reports.stop)
        finally:
            await publisher.stop()
            reports.kill()
    assert (second["version"], second["reason"]) == (2, "late")
    report, _, _ = await projections.stored(second["report_id"])
    after = next(f["value"] for f in report["kpis"] if f["label"] == "Events in the period")
    assert after == before + 3
    # the first version is kept as it was, and both were delivered once
    kept, _, _ = await projections.stored(first["report_id"])
    assert next(f["value"] for f in kept["kpis"] if f["label"] == "Events in the period") == before
    assert inbox.counts()[first["report_id"]] == inbox.counts()[second["report_id"]] == 1


async def _state(store: Store, report_id: str, state: str) -> bool:
    return await store.pool.fetchval(f"select state = $2 from {store.s}.runs where report_id = $1", report_id, state)


async def test_a_run_that_crashed_after_its_send_is_not_published_again(reporter, rsettings, h):
    run = await reporter.runs.claim(h.QUIET, h.PERIOD_END, "manual")
    run = await reporter.generate(h.QUIET, run)
    # what a crash leaves: the send started (and went out), the run not yet marked published
    await reporter.runs.publishing(run)
    report, _, sha = await reporter.store.stored(run.report_id)
    sent = await reporter.publisher.publish(rsettings.reports_topic, h.QUIET.name, published_record(report, sha),
                                            schema_of="reports.v1")
    assert await reporter.drive(run.report_id) == [run.report_id]
    assert published(rsettings) == Counter({run.report_id: 1})
    row = await reporter.store.pool.fetchrow(
        f"select published_partition, published_offset from {reporter.store.s}.runs where report_id = $1",
        run.report_id)
    assert (row["published_partition"], row["published_offset"]) == (sent.partition, sent.offset)


async def test_a_channel_that_keeps_failing_is_retried_then_dead_lettered_with_its_reason(reporter, rsettings, h):
    rsettings.reports_max_attempts, rsettings.reports_retry_base_seconds = 2, 0
    rsettings.reports_smtp_host, rsettings.reports_smtp_port = "127.0.0.1", free_port()  # nobody listens
    report_id, deliveries = await reporter.run_now(h.DEFINITION, h.PERIOD_END)
    assert deliveries == {"email": "pending", "portal": "delivered"}  # no Slack webhook is configured
    assert await reporter.drive() == [report_id]
    assert await reporter.runs.deliveries(report_id) == {"email": "dead", "portal": "delivered"}
    [dead] = read_messages(rsettings, dlq(rsettings.reports_topic), 1)
    headers = dict(dead.headers())
    assert (headers["reports.report_id"], headers["reports.channel"]) == (report_id.encode(), b"email")
    assert headers["dlq.reason"].startswith(b"ConnectionRefusedError")
    assert decode_avro(rsettings, dead)["report_id"] == report_id  # the report's record, for a replay


async def test_the_watermark_is_reached_only_once_the_projector_committed_past_it(reporter, rsettings, store, h):
    publisher, watermark = reporter.publisher, reporter.watermark
    event = h.event("pump-7", h.PERIOD_END, {"temperature": 40.0})
    await publisher.publish(rsettings.reports_raw_topic, "pump-7", event, schema_of="events.raw.v1")
    published_at = datetime.now(UTC)
    assert not await watermark.reached(published_at)  # the projector has not read it
    consumer = projector(rsettings, store, publisher)
    await consumer.start()
    task = asyncio.create_task(consumer.run(batch_timeout_ms=200))
    try:
        await until(lambda: watermark.reached(published_at), 30, "the watermark past the event")
    finally:
        task.cancel()
        await consumer.stop()
    assert await store.pool.fetchval(f"select count(*) from {store.s}.events where event_id = $1", event["event_id"])
    assert sum((await watermark.offsets()).values()) == 1


async def test_a_new_definition_does_not_make_the_periods_before_it_was_first_scheduled(reporter, rsettings):
    scheduler = Scheduler(rsettings, reporter.config, reporter)
    assert await scheduler.tick() == []
    assert await reporter.store.pool.fetchval(f"select count(*) from {reporter.store.s}.runs") == 0
    # a day later (the service down meanwhile), the period of each definition that ended in between is made
    await scheduler.tick(datetime.now(UTC) + timedelta(days=1))
    rows = await reporter.store.pool.fetch(f"select definition, reason from {reporter.store.s}.runs")
    assert sorted((r["definition"], r["reason"]) for r in rows) == [("daily-ops", "scheduled"),
                                                                    ("daily-quiet", "scheduled")]
