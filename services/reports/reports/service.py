"""Wires the service: store, projector, LLM, rag client, run driver, scheduler and portal on one event loop."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from platform_common.kafka import Publisher, ensure_topics
from platform_common.llm import LLM, InProcessLLM, make_llm
from platform_common.ops import kafka_check, postgres_check, registry_check, serve
from platform_common.service import init_service

from .config import load_config
from .generator import ReportGenerator
from .portal import create_app
from .projector import projector
from .rag_client import RagClient
from .reporter import Reporter
from .scheduler import Scheduler
from .settings import ReportsSettings
from .store import Store
from .watermark import Watermark

log = logging.getLogger(__name__)


def build_llm(settings: ReportsSettings) -> LLM:
    return make_llm(settings.reports_llm_backend, data_dir=settings.data_dir, url=settings.reports_llm_url,
                    model=settings.reports_llm_model, api_key=settings.reports_llm_api_key,
                    runtime=settings.reports_llm_runtime)


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def run(settings: ReportsSettings) -> None:
    init_service(settings)
    config = load_config(settings.reports_config, settings.reports_users_file)
    if config.development_users and not loopback(settings.reports_host):
        raise SystemExit(f"reports: {settings.reports_users_file} holds development users; refusing to listen on "
                         f"{settings.reports_host} (set REPORTS_USERS_FILE to real users, or listen on 127.0.0.1)")
    if not config.users:
        log.warning("no portal users (REPORTS_USERS_FILE): the portal lets nobody sign in; the API takes keys")
    store = await Store.connect(settings.database_url, settings.reports_db_schema)
    await ensure_topics(settings, [settings.reports_raw_topic, settings.reports_enriched_topic,
                                   settings.reports_anomalies_topic, settings.reports_topic])
    publisher = Publisher(settings)
    await publisher.start()
    consumer = projector(settings, store, publisher)
    await consumer.start()
    llm = build_llm(settings)
    if isinstance(llm, InProcessLLM):
        await llm.load()  # the first report should not pay for the model load
    rag = RagClient(settings.reports_rag_url, settings.reports_rag_top_k,
                    keys={t: k.get_secret_value() for t, k in settings.reports_rag_api_keys.items()})
    watermark = Watermark(settings, consumer.topics, settings.reports_group, publisher.producer.partitions_for)
    await watermark.start()
    reporter = Reporter(settings, config, store, ReportGenerator(settings, store, llm, rag), publisher, watermark)
    app = create_app(config, store, reporter, {
        "kafka": kafka_check(settings.kafka_bootstrap_servers),
        "schema_registry": registry_check(settings.schema_registry_url),
        "postgres": postgres_check(settings.database_url)}, settings)
    log.info("reports: %d definitions, portal on port %d", len(config.reports), settings.reports_port)
    try:
        await asyncio.gather(consumer.run(), Scheduler(settings, config, reporter).run(),
                             serve(app, settings.reports_port, settings.reports_host))
    finally:
        await watermark.stop()
        await consumer.stop()
        await publisher.stop()
        await rag.aclose()
        await llm.aclose()
        await store.close()
