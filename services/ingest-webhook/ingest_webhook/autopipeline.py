"""Redis scripts of concurrent requests sent together: one pipeline per event-loop turn, not one round trip each.

Under load most of a Redis call's cost is the client's per-call work (pool, packing, awaiting the reply), not
Redis: the profile of ingest-webhook put its two calls per webhook at about a fifth of the service's CPU. Requests
that reach Redis in the same loop turn now share one pipeline, as ioredis' auto-pipelining does.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis


class AutoPipeline:
    def __init__(self, redis: Redis):
        self.redis = redis
        self._queued: list[tuple[tuple, asyncio.Future]] = []
        self._sending: set[asyncio.Task] = set()  # strong references, so a batch in flight is not collected

    def eval(self, script: str, keys: list[str], args: list) -> asyncio.Future:
        """The script's reply, or the RedisError that the call (or the whole batch) met."""
        loop = asyncio.get_running_loop()
        if not self._queued:
            loop.call_soon(self._flush)
        reply = loop.create_future()
        # EVAL rather than EVALSHA: Redis caches the script by its hash, and a restarted Redis cannot answer NOSCRIPT
        self._queued.append((("EVAL", script, len(keys), *keys, *args), reply))
        return reply

    def _flush(self) -> None:
        batch, self._queued = self._queued, []
        task = asyncio.create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[tuple, asyncio.Future]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for command, _ in batch:
            pipe.execute_command(*command)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except Exception as e:  # the connection failed: every call of the batch failed with it
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(e)
            return
        except asyncio.CancelledError:  # shutting down
            for _, reply in batch:
                reply.cancel()
            raise
        for (_, reply), value in zip(batch, replies, strict=True):
            if reply.done():  # its request went away (client disconnected)
                continue
            if isinstance(value, Exception):
                reply.set_exception(value)
            else:
                reply.set_result(value)
