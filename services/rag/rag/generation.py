"""Generation through the platform's LLM client, with a Redis cache keyed by model, prompt version and the
rendered prompt: a redelivered event or a repeated question costs no second generation and gets the same text."""

from __future__ import annotations

import hashlib
import json
import logging

import redis.asyncio as redis
from prometheus_client import Counter, Histogram

from platform_common.llm import LLM

from .prompts import Prompt

log = logging.getLogger(__name__)

GENERATION_SECONDS = Histogram("rag_generation_duration_seconds", "Time of one LLM generation", ["model"],
                               buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32))
GENERATION_TOKENS = Counter("rag_generation_tokens_total", "Tokens through the LLM", ["model", "kind"])
CACHE = Counter("rag_generation_cache_total", "Generation cache lookups", ["outcome"])


class Generator:
    def __init__(self, llm: LLM, cache: redis.Redis | None, max_tokens: int, ttl_seconds: int):
        self.llm = llm
        self.cache = cache
        self.max_tokens = max_tokens
        self.ttl = ttl_seconds

    @property
    def model(self) -> str:
        return self.llm.model

    async def generate(self, prompt: Prompt, **values: str) -> str:
        messages = prompt.render(**values)
        key = "rag:gen:" + hashlib.sha256(json.dumps(
            [self.model, prompt.version, self.max_tokens, [(m.role, m.content) for m in messages]]
        ).encode()).hexdigest()
        cached = await self._get(key)
        if cached is not None:
            CACHE.labels("hit").inc()
            return cached
        CACHE.labels("miss").inc()
        result = await self.llm.generate(messages, self.max_tokens)
        GENERATION_SECONDS.labels(self.model).observe(result.seconds)
        GENERATION_TOKENS.labels(self.model, "prompt").inc(result.prompt_tokens)
        GENERATION_TOKENS.labels(self.model, "completion").inc(result.completion_tokens)
        await self._set(key, result.text)
        return result.text

    # the cache only saves work: when Redis is away, generation goes on without it
    async def _get(self, key: str) -> str | None:
        if self.cache is None:
            return None
        try:
            value = await self.cache.get(key)
        except redis.RedisError as e:
            CACHE.labels("error").inc()
            log.warning("generation cache unavailable: %s", e)
            return None
        return value.decode() if isinstance(value, bytes) else value

    async def _set(self, key: str, text: str) -> None:
        if self.cache is not None:
            try:
                await self.cache.set(key, text, ex=self.ttl)
            except redis.RedisError as e:
                log.warning("generation cache unavailable: %s", e)
