"""The model client: a `local` (ONNX Runtime in a worker process) or `triton` (KServe V2 over HTTP) backend behind the
same micro-batcher, timeout and circuit breaker, so the stream code does not know which one it talks to.

Both backends run the same pre- and post-processing (`enrich.models.TextModel`); only the encoder call differs. Over
V2 the encoder takes `input_ids` and `attention_mask` (INT64 [rows, tokens]; from version 2 also `token_type_ids`,
each sub-token's casing class) and answers `token_logits`
(FP32 [rows, tokens, 9]) and `sentiment_logits` (FP32 [rows, 3]): Triton's ONNX Runtime backend serves the committed
ONNX file as it is (deploy/triton), and the model version asked for is the artifact's, so the answer names what ran.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import tritonclient.http.aio as triton
from tritonclient.utils import InferenceServerException

from .metrics import BREAKER_OPEN, MODEL_BATCH, MODEL_ERRORS, MODEL_SECONDS
from .models import ModelRef, get_model
from .pii import mask

log = logging.getLogger(__name__)


class ModelUnavailable(Exception):
    """Transient: the server is down, slow or the circuit is open; the same request may succeed later."""


class ModelFailed(Exception):
    """The model refused these inputs; retrying the same inputs will fail again."""


def _init_worker(task: str, threads: int = 1) -> None:
    """Loads the model, and ends the worker when the service dies (SIGKILL gives it no chance to stop it)."""
    os.environ["ENRICH_ORT_THREADS"] = str(threads)
    get_model(task)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _predict(task: str, texts: list[str]) -> list[dict]:
    # module level, so that a worker process can run it
    return get_model(task).predict(texts)


class LocalBackend:
    """The models without a server. By default they run in a worker process of this service (`workers` > 0), so
    Kafka, Avro and the models use two cores instead of sharing one GIL; `workers=0` runs them in a thread."""

    kind = "local"

    def __init__(self, task: str, workers: int = 0, threads: int = 1):
        self.task, self.workers = task, workers
        # the refs are read from the artifact's config without an ONNX session in this process
        from .models import TextModel
        self.refs = TextModel(session=False).refs if task == "text" else [ModelRef(task, *_name_version(task))]
        self._executor: Executor = (
            ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                initargs=(task, threads))
            if workers else ThreadPoolExecutor(1, thread_name_prefix=f"model-{task}"))

    async def start(self) -> None:
        """Starts the workers (each loads the model) before the stream, outside the request timeout: concurrent
        warm-ups make the pool start every worker."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, _predict, self.task, ["warm-up"])
                               for _ in range(max(1, self.workers))))

    async def infer(self, texts: list[str]) -> tuple[list[dict], list[ModelRef]]:
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, _predict, self.task, texts)
        except BrokenExecutor as e:  # the worker process died: a new backend is needed, not a new input
            raise ModelUnavailable(f"{self.task} worker process died") from e
        except Exception as e:
            raise ModelFailed(mask(f"{type(e).__name__}: {e}")) from e
        return results, self.refs

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class TritonBackend:
    """Tokenizes and decodes in a thread of this process; the encoder runs on the V2 server."""

    kind = "triton"

    def __init__(self, task: str, url: str, model_name: str = "minilm_multitask"):
        from .models import TextModel
        self.task, self.model_name = task, model_name
        self.model = TextModel(session=False)
        self.refs = self.model.refs
        self.client = triton.InferenceServerClient(url)

    async def start(self) -> None:
        pass  # the server may come up later: requests fail as ModelUnavailable until it does

    async def infer(self, texts: list[str]) -> tuple[list[dict], list[ModelRef]]:
        prepared = await asyncio.to_thread(self.model.prepare, texts)
        token_logits, sentiment_logits = await self.run(prepared)
        results = await asyncio.to_thread(self.model.finish, texts, prepared, token_logits, sentiment_logits)
        return results, self.refs

    # rows per request: at most the server's max_batch_size (deploy/triton/minilm_multitask/config.pbtxt); requests
    # group rows of similar length (enrich.models.transformer.buckets), so short texts are not padded to long ones
    max_rows = 64

    async def run(self, prepared) -> tuple[np.ndarray, np.ndarray]:
        from .models.transformer import assemble, buckets
        groups = buckets(prepared, self.max_rows)
        answers = await asyncio.gather(*(self._request(named) for _, named in groups))
        return assemble(prepared, [(rows, *answer) for (rows, _), answer in zip(groups, answers, strict=True)])

    async def _request(self, named: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        inputs = []
        for name, array in named.items():  # token_type_ids (casing classes) too for a model that takes them
            tensor = triton.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        try:
            answer = await self.client.infer(
                self.model_name, inputs, model_version=self.model.encoder.version,
                outputs=[triton.InferRequestedOutput("token_logits", binary_data=True),
                         triton.InferRequestedOutput("sentiment_logits", binary_data=True)])
        except InferenceServerException as e:
            status, message = str(e.status() or ""), e.message() or ""
            # 404 or "unknown model"/"not ready": not loaded (yet); 502-504: overloaded; else the input is refused
            if status in ("404", "502", "503", "504") or "unknown model" in message or "not ready" in message \
                    or "not found" in message:
                raise ModelUnavailable(f"V2 server answered {status}: {message}") from e
            raise ModelFailed(mask(f"V2 server answered {status}: {message}")) from e
        return answer.as_numpy("token_logits"), answer.as_numpy("sentiment_logits")

    async def close(self) -> None:
        await self.client.close()


def _name_version(name: str) -> tuple[str, str]:
    model = get_model(name)
    return model.name, model.version


class CircuitBreaker:
    """Opens after `threshold` consecutive failures and fails fast for `reset_s`; then lets requests through again,
    and the first failure re-opens it (half-open)."""

    def __init__(self, threshold: int, reset_s: float, on_open=lambda: None):
        self.threshold, self.reset_s, self.on_open = threshold, reset_s, on_open
        self.failures = 0
        self.opened_at: float | None = None

    def check(self) -> None:
        if self.opened_at is not None and time.monotonic() - self.opened_at < self.reset_s:
            raise ModelUnavailable("circuit open")

    def success(self) -> None:
        self.failures, self.opened_at = 0, None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            if self.opened_at is None:
                self.on_open()
            self.opened_at = time.monotonic()


class ModelClient:
    """Merges concurrent `predict` calls into requests of at most `max_batch` texts, waiting at most `max_wait_s` for
    a batch to fill, with at most `inflight` requests at a time, each bounded by `timeout_s`."""

    def __init__(self, task: str, backend: LocalBackend | TritonBackend, *, max_batch: int, max_wait_s: float,
                 inflight: int, timeout_s: float, breaker: CircuitBreaker):
        self.task, self.backend = task, backend
        self.max_batch, self.max_wait_s, self.timeout_s, self.breaker = max_batch, max_wait_s, timeout_s, breaker
        self._queue: asyncio.Queue[tuple[list[str], asyncio.Future]] = asyncio.Queue()
        self._slots = asyncio.Semaphore(inflight)
        self._tasks: set[asyncio.Task] = set()
        self._collector: asyncio.Task | None = None
        self._labels = (task, backend.kind)

    async def start(self) -> None:
        await self.backend.start()
        self._collector = asyncio.create_task(self._collect(), name=f"batcher-{self.task}")

    async def close(self) -> None:
        if self._collector:
            self._collector.cancel()
        for task in self._tasks:
            task.cancel()
        await self.backend.close()

    async def predict(self, texts: list[str]) -> tuple[list[dict], list[ModelRef] | None]:
        if not texts:
            return [], None
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((texts, future))
        return await future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self._queue.get()]
            size = len(pending[0][0])
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch and (left := deadline - loop.time()) > 0:
                try:
                    pending.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
                size += len(pending[-1][0])
            await self._slots.acquire()
            task = asyncio.create_task(self._dispatch(pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, pending: list[tuple[list[str], asyncio.Future]]) -> None:
        try:
            texts = [t for batch, _ in pending for t in batch]
            chunks = [texts[i:i + self.max_batch] for i in range(0, len(texts), self.max_batch)]
            try:
                answers = await asyncio.gather(*(self._request(c) for c in chunks))
            except Exception as e:  # whatever failed, every caller of this request gets the error
                for _, future in pending:
                    if not future.done():
                        future.set_exception(e)
                return
            results = [r for chunk_results, _ in answers for r in chunk_results]
            ref = answers[0][1]
            at = 0
            for batch, future in pending:
                if not future.done():
                    future.set_result((results[at:at + len(batch)], ref))
                at += len(batch)
        finally:
            self._slots.release()

    async def _request(self, texts: list[str]) -> tuple[list[dict], list[ModelRef]]:
        self.breaker.check()
        MODEL_BATCH.labels(*self._labels).observe(len(texts))
        started = time.perf_counter()
        try:
            results, ref = await asyncio.wait_for(self.backend.infer(texts), self.timeout_s)
        except ModelFailed:
            MODEL_ERRORS.labels(*self._labels, "failed").inc()
            raise
        except Exception as e:  # timeout, connection refused or reset, server overloaded
            MODEL_ERRORS.labels(*self._labels, "unavailable").inc()
            self.breaker.failure()
            if isinstance(e, ModelUnavailable):
                raise
            raise ModelUnavailable(f"{self.task} via {self.backend.kind}: {type(e).__name__} {e}") from e
        MODEL_SECONDS.labels(*self._labels).observe(time.perf_counter() - started)
        self.breaker.success()
        if len(results) != len(texts):
            raise ModelFailed(f"{self.task} answered {len(results)} results for {len(texts)} texts")
        return results, ref


def model_client(task: str, backend: str, settings) -> ModelClient:
    impl = (LocalBackend(task, settings.enrich_local_workers, settings.enrich_ort_threads) if backend == "local"
            else TritonBackend(task, settings.enrich_triton_url, settings.enrich_triton_model))

    def opened() -> None:
        BREAKER_OPEN.labels(task, backend).inc()
        log.warning("circuit opened for %s via %s", task, backend)

    breaker = CircuitBreaker(settings.enrich_breaker_failures, settings.enrich_breaker_reset_s, on_open=opened)
    return ModelClient(task, impl, max_batch=settings.enrich_model_batch,
                       max_wait_s=settings.enrich_model_wait_ms / 1000, inflight=settings.enrich_model_inflight,
                       timeout_s=settings.enrich_model_timeout_s, breaker=breaker)
