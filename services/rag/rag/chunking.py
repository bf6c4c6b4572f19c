"""Splits documents into overlapping passages of whole sentences; the config is part of the index version."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|\n+|$)")


@dataclass(frozen=True)
class ChunkingConfig:
    max_words: int = 120
    overlap_words: int = 20

    @property
    def version(self) -> str:
        return f"sent-w{self.max_words}-o{self.overlap_words}"

    def as_dict(self) -> dict:
        return {"method": "sentences", "max_words": self.max_words, "overlap_words": self.overlap_words}


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str
    start: int  # character offsets in the document, for lineage
    end: int


def chunk_text(text: str, config: ChunkingConfig) -> list[Chunk]:
    """Packs sentences into chunks of at most `max_words` (a longer sentence is its own chunk); each chunk
    starts with the last sentences of the previous one, up to `overlap_words`."""
    sentences = [(m.start(), m.end(), len(m.group().split())) for m in _SENTENCE.finditer(text) if m.group().strip()]
    chunks: list[Chunk] = []
    i = 0
    while i < len(sentences):
        j, words = i, 0
        while j < len(sentences) and (j == i or words + sentences[j][2] <= config.max_words):
            words += sentences[j][2]
            j += 1
        start, end = sentences[i][0], sentences[j - 1][1]
        chunks.append(Chunk(len(chunks), text[start:end].strip(), start, end))
        if j >= len(sentences):
            break
        # step back over trailing sentences that fit in the overlap, but always move forward
        back, k = 0, j
        while k - 1 > i and back + sentences[k - 1][2] <= config.overlap_words:
            k -= 1
            back += sentences[k][2]
        i = k
    return chunks
