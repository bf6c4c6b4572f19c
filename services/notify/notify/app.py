"""Wires notify together: Kafka intake, the dispatcher, outcome publishing and the HTTP API on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn
from fastapi import FastAPI

from platform_common.auth import KeyStore, install_auth
from platform_common.kafka import ANOMALIES, Publisher, ensure_topics
from platform_common.limits import BodyLimit
from platform_common.ops import kafka_check, ops_router, postgres_check, registry_check
from platform_common.service import init_service
from platform_common.stream import ReliableConsumer

from .dispatcher import Dispatcher
from .intake import Intake
from .outcomes import Outcomes
from .routing import RoutingConfig
from .settings import NotifySettings
from .silences import install_error_handlers, silences_router
from .store import Store

log = logging.getLogger(__name__)


class Notify:
    def __init__(self, settings: NotifySettings, routes: RoutingConfig | None = None, keys: KeyStore | None = None):
        self.settings = settings
        self.routes = routes or RoutingConfig.load(settings.notify_routes_file)
        self.store = Store(settings.database_url, settings.notify_db_schema)
        self.publisher = Publisher(settings)
        self.outcomes = Outcomes(self.publisher, self.store, settings.notify_notifications_topic)
        self.dispatcher = Dispatcher(settings, self.routes, self.store, self.publisher, self.outcomes)
        self.intake = Intake(self.routes, self.store, self.outcomes, self.dispatcher.wake)
        self.consumer = ReliableConsumer(settings, settings.notify_topics, settings.notify_group_id,
                                         self.intake.handle, self.publisher)
        self.app = FastAPI(title="notify", description="Alert routing to PagerDuty and Slack; silences.")
        self.app.include_router(ops_router({
            "kafka": kafka_check(settings.kafka_bootstrap_servers),
            "schema_registry": registry_check(settings.schema_registry_url),
            "postgres": postgres_check(settings.database_url)}))
        self.app.include_router(silences_router(self.store, settings.notify_silence_max_duration))
        install_error_handlers(self.app)
        install_auth(self.app, keys)  # API keys from API_KEYS / API_KEYS_FILE unless given
        self.app.add_middleware(BodyLimit, max_bytes=settings.notify_max_body_bytes)
        self.tasks: list[asyncio.Task] = []
        self.server: uvicorn.Server | None = None

    async def start(self) -> None:
        for receiver in self.routes.receivers:
            if not receiver.secret():
                log.warning("receiver %s: %s is not set; its alerts will go to the DLQ", receiver.name,
                            receiver.secret_env)
        await ensure_topics(self.settings, [*self.settings.notify_topics, self.settings.notify_notifications_topic])
        await self.store.start()
        await self.publisher.start()
        # register the schemas now, so a wrong registry fails the start rather than the first alert
        await self.publisher.serde.register(self.settings.notify_notifications_topic, "notifications.v1")
        for topic in self.settings.notify_topics:
            await self.publisher.serde.register(f"{topic}.dlq", ANOMALIES)
        await self.consumer.start()
        self.tasks = [asyncio.create_task(coro, name=name) for name, coro in (
            ("consumer", self.consumer.run(batch_timeout_ms=200)), ("dispatcher", self.dispatcher.run()),
            ("outcome-sweep", self.outcomes.sweep()))]

    async def serve(self, port: int | None = None) -> None:
        # like platform_common.ops.serve, but without lifespan events (none are used) and stoppable, so that a
        # shutdown neither cuts a request short nor logs a cancelled lifespan
        self.server = uvicorn.Server(uvicorn.Config(
            self.app, host=self.settings.notify_host, port=self.settings.notify_port if port is None else port,
            log_config=None, access_log=False, lifespan="off"))
        # the signals are the service's (see platform_common.ops.serve)
        self.server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign, assignment]
        await self.server.serve()

    async def stop(self) -> None:
        if self.server:
            self.server.should_exit = True
        await self.consumer.stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.dispatcher.stop()
        await self.publisher.stop()
        await self.store.stop()


async def main(settings: NotifySettings | None = None) -> None:
    settings = settings or NotifySettings()
    init_service(settings)
    service = Notify(settings)
    await service.start()
    log.info("notify consuming %s, API on port %d", settings.notify_topics, settings.notify_port)
    http = asyncio.create_task(service.serve())
    try:
        done, _ = await asyncio.wait([http, *service.tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a task that ended on its own is a failure worth its traceback in the log
    finally:
        await service.stop()
        await asyncio.wait([http], timeout=5)
