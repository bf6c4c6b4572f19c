"""Readers of the shared NLP datasets (../shared/datasets/nlp, read in place, never copied into the repository)."""

from __future__ import annotations

import os
from pathlib import Path

NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
SENTIMENT_LABELS = ["negative", "neutral", "positive"]
NER_LANGS = ("en", "de", "es", "nl")
XLMT_LANGS = {"english": "en", "french": "fr", "german": "de", "italian": "it", "portuguese": "pt",
              "spanish": "es", "arabic": "ar", "hindi": "hi"}


def datasets_dir() -> Path:
    env = os.environ.get("NLP_DATASETS")
    if env:
        return Path(env)
    # services/enrich/enrich/datasets.py -> the repository's root -> ../shared beside it
    return Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "nlp"


def read_conll(lang: str, split: str, root: Path | None = None) -> list[tuple[list[str], list[str]]]:
    """Sentences as (tokens, IOB2 tags); -DOCSTART- lines are document separators, not sentences."""
    path = (root or datasets_dir()) / "ner" / f"conll_{lang}_{split}.conllu"
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            if tokens:
                sentences.append((tokens, tags))
            tokens, tags = [], []
            continue
        if parts[1] == "-DOCSTART-":
            continue
        tokens.append(parts[1])
        tags.append(parts[2])
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def read_sst2(split: str, root: Path | None = None) -> list[tuple[str, int]]:
    """(sentence, 0 negative / 1 positive)."""
    path = (root or datasets_dir()) / "sentiment" / f"sst2_{split}.tsv"
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        text, _, label = line.rpartition("\t")
        if text.strip():
            rows.append((text.strip(), int(label)))
    return rows


def read_tweeteval(root: Path | None = None) -> list[tuple[str, int]]:
    """(tweet, 0 negative / 1 neutral / 2 positive)."""
    base = (root or datasets_dir()) / "sentiment"
    texts = (base / "tweeteval_val_text.txt").read_text(encoding="utf-8").splitlines()
    labels = (base / "tweeteval_val_labels.txt").read_text(encoding="utf-8").splitlines()
    return [(t, int(label)) for t, label in zip(texts, labels, strict=True)]


def read_xlmt(language: str, split: str, root: Path | None = None) -> list[tuple[str, int]]:
    base = (root or datasets_dir()) / "sentiment" / "xlmt"
    texts = (base / f"{language}_{split}_text.txt").read_text(encoding="utf-8").splitlines()
    labels = (base / f"{language}_{split}_labels.txt").read_text(encoding="utf-8").splitlines()
    return [(t, int(label)) for t, label in zip(texts, labels, strict=True)]
