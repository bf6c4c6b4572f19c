"""The Redis calls of concurrent requests share one pipeline, and each caller still gets its own reply or error
(the real Redis of the stack)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis
from redis.exceptions import ConnectionError, ResponseError

from ingest_webhook.autopipeline import AutoPipeline
from ingest_webhook.settings import IngestSettings


@pytest.fixture
async def client():
    c = redis.from_url(IngestSettings().redis_url)
    yield c
    await c.aclose()


async def test_concurrent_calls_share_one_pipeline_and_keep_their_own_replies(client, monkeypatch):
    pipelines = []
    make = client.pipeline
    monkeypatch.setattr(client, "pipeline", lambda **kw: pipelines.append(kw) or make(**kw))
    batcher = AutoPipeline(client)
    key = f"test:autopipeline:{uuid.uuid4().hex}"
    replies = await asyncio.gather(
        batcher.eval("return redis.call('INCR', KEYS[1])", [key], []),
        batcher.eval("return ARGV[1]", [], ["hello"]),
        batcher.eval("return redis.call('INCR', KEYS[1])", [key], []),
        batcher.eval("return redis.call('NOSUCHCOMMAND')", [], []),
        return_exceptions=True)
    assert replies[:3] == [1, b"hello", 2]
    assert isinstance(replies[3], ResponseError)  # one failing script fails its own call only
    assert len(pipelines) == 1
    await client.delete(key)
    # a later call goes in a pipeline of its own
    assert await batcher.eval("return 7", [], []) == 7 and len(pipelines) == 2


async def test_a_lost_connection_fails_every_call_of_the_batch():
    unreachable = redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    batcher = AutoPipeline(unreachable)
    replies = await asyncio.gather(*(batcher.eval("return 1", [], []) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in replies), replies
    await unreachable.aclose()
