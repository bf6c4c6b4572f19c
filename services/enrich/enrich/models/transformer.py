"""The fine-tuned multitask encoder (all-MiniLM-L6-v2 with an IOB2 token head and a 3-class sentiment head), as ONNX.

Split in three so that every backend runs the same code around the encoder: `prepare` (tokenize, cut long texts into
windows of at most `max_tokens`), the encoder itself (ONNX Runtime in-process, or a KServe V2 server such as Triton
running the same ONNX file), and `finish` (decode the logits into entities with offsets into the original text and a
sentiment). Artifacts (model.onnx, tokenizer.json, config.json, MODEL_CARD.md) live in `artifacts/<name>/<version>/`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ARTIFACTS = Path(__file__).with_name("artifacts")
DEFAULT_MODEL = "minilm-multitask"


# casing class of each sub-token, from the original characters (the uncased vocabulary loses them; CoNLL's entities
# depend on them), fed as `token_type_ids` to a model whose config.json lists that input: 0 no letters (and the
# special tokens), 1 lower, 2 Initial-cap (one upper letter, the first), 3 ALL-CAPS (two or more letters), 4 mixed
CASING_CLASSES = 5


def casing_class(piece: str) -> int:
    letters = [c for c in piece if c.isalpha()]
    if not letters:
        return 0
    upper = [c.isupper() for c in letters]
    if not any(upper):
        return 1
    if upper[0] and not any(upper[1:]):
        return 2
    return 3 if all(upper) else 4


def token_casing(source: str | list[str], offsets, word_ids: list[int | None] | None = None) -> list[int]:
    """Casing classes of a tokenizer's tokens: `offsets` index `source` (a text), or with `word_ids` (pre-split
    words, as the fast tokenizers give them) the word each token comes from; a token of no word (special) is 0."""
    if isinstance(source, str):
        return [casing_class(source[s:e]) for s, e in offsets]
    return [0 if w is None else casing_class(source[w][s:e]) for (s, e), w in zip(offsets, word_ids or [], strict=True)]


def artifact_dir(name: str = DEFAULT_MODEL, version: str | None = None) -> Path:
    """The committed version named in `artifacts/<name>/CURRENT` unless one is asked for."""
    base = ARTIFACTS / name
    return base / (version or (base / "CURRENT").read_text().strip())


@dataclass
class Prepared:
    """Encoder inputs for a list of texts: windows (rows) padded to one width, and which text each row belongs to."""
    input_ids: np.ndarray        # int64 [rows, width]
    attention_mask: np.ndarray   # int64 [rows, width]
    row_text: list[int]          # text index of each row
    offsets: list[list[tuple[int, int]]]  # per row, (start, end) character offsets of each real token
    token_type_ids: np.ndarray | None = None  # int64 [rows, width] casing classes, for a model that takes them

    def inputs(self) -> dict[str, np.ndarray]:
        """The encoder's inputs by name (token_type_ids only for a model that takes them)."""
        named = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            named["token_type_ids"] = self.token_type_ids
        return named


def buckets(prepared: Prepared, size: int = 64) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Rows grouped by length, each group cut to its own longest row: one long text in a batch of short ones does
    not make every row as long (the encoder's cost is per token). Each group: its rows and the encoder's inputs."""
    lengths = prepared.attention_mask.sum(1)
    order = np.argsort(lengths, kind="stable")
    out = []
    for i in range(0, len(order), size):
        rows = order[i:i + size]
        width = int(lengths[rows].max())
        out.append((rows, {name: array[rows, :width] for name, array in prepared.inputs().items()}))
    return out


def assemble(prepared: Prepared, parts) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's answers for `buckets` put back in row order, token logits zero-padded to the full width."""
    n, width = prepared.input_ids.shape
    labels = parts[0][1].shape[-1]
    token_logits = np.zeros((n, width, labels), dtype=np.float32)
    sentiment_logits = np.zeros((n, parts[0][2].shape[-1]), dtype=np.float32)
    for rows, tokens, sentiment in parts:
        token_logits[rows, :tokens.shape[1]] = tokens
        sentiment_logits[rows] = sentiment
    return token_logits, sentiment_logits


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class MultitaskModel:
    """Pre- and post-processing of the encoder; `predict` runs it with in-process ONNX Runtime."""

    task = "ner+sentiment"

    def __init__(self, path: Path | None = None, threads: int | None = None, session: bool = True):
        from tokenizers import Tokenizer

        self.path = path or artifact_dir()
        self.config = json.loads((self.path / "config.json").read_text())
        self.name, self.version = self.config["name"], self.config["version"]
        self.ner_labels: list[str] = self.config["ner_labels"]
        self.sentiment_labels: list[str] = self.config["sentiment_labels"]
        self.languages = {"ner": set(self.config["languages"]["ner"]),
                          "sentiment": set(self.config["languages"]["sentiment"])}
        self.max_tokens = int(self.config.get("max_tokens", 128))
        # version 2 on: the casing class of each sub-token as token_type_ids (version 1 takes two inputs)
        self.casing = "token_type_ids" in self.config.get("inputs", ["input_ids", "attention_mask"])
        self.tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.cls_id = self._token_id("[CLS]")
        self.sep_id = self._token_id("[SEP]")
        self.pad_id = self._token_id("[PAD]")
        self.session = None
        if session:
            import onnxruntime as ort
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads or int(os.environ.get("ENRICH_ORT_THREADS", "1"))
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.session = ort.InferenceSession(str(self.path / "model.onnx"), options,
                                                providers=["CPUExecutionProvider"])

    @staticmethod
    def file_hash(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    # -- pre-processing -------------------------------------------------------------------------------------------
    def prepare(self, texts: list[str]) -> Prepared:
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return self._windows([(e.ids, e.offsets, token_casing(text, e.offsets) if self.casing else None)
                              for text, e in zip(texts, encodings, strict=True)])

    def prepare_words(self, sentences: list[list[str]]) -> tuple[Prepared, list[list[int | None]]]:
        """Pre-split words (CoNLL): also returns, per row, the word index of each real token."""
        encodings = self.tokenizer.encode_batch(sentences, is_pretokenized=True, add_special_tokens=False)
        prepared = self._windows([(e.ids, e.offsets,
                                   token_casing(words, e.offsets, e.word_ids) if self.casing else None)
                                  for words, e in zip(sentences, encodings, strict=True)])
        words: list[list[int | None]] = []
        for e in encodings:
            ids = list(e.word_ids)
            step = self.max_tokens - 2
            words.extend(ids[i:i + step] for i in range(0, max(len(ids), 1), step))
        return prepared, words

    def _windows(self, encoded: list[tuple[list[int], list[tuple[int, int]], list[int] | None]]) -> Prepared:
        """Texts longer than the encoder's window are cut into consecutive windows, each its own row; casing classes
        (when the model takes them) follow their tokens, 0 for [CLS], [SEP] and padding."""
        step = self.max_tokens - 2
        rows, row_text, offsets, casing = [], [], [], []
        for t, (ids, offs, cases) in enumerate(encoded):
            for i in range(0, max(len(ids), 1), step):
                rows.append([self.cls_id, *ids[i:i + step], self.sep_id])
                offsets.append(list(offs[i:i + step]))
                casing.append(cases[i:i + step] if cases is not None else [])
                row_text.append(t)
        width = max(len(r) for r in rows) if rows else 2
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64) if self.casing else None
        for i, r in enumerate(rows):
            input_ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
            if types is not None:
                types[i, 1:1 + len(casing[i])] = casing[i]
        return Prepared(input_ids, mask, row_text, offsets, types)

    def _token_id(self, token: str) -> int:
        found = self.tokenizer.token_to_id(token)
        if found is None:
            raise ValueError(f"{self.path}: {token} is not in the tokenizer's vocabulary")
        return found

    # -- the encoder ----------------------------------------------------------------------------------------------
    def run(self, prepared: Prepared, bucket: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Rows in length buckets. A model quantized with ONNX Runtime's dynamic int8 scales activations per request,
        so a row's logits move slightly (about 1e-2) with the rows it is run with; the Triton backend sends the same
        groups of `bucket` rows. From version 4 the int8 scales per token (training/quantize.py): a row's logits do
        not depend on the others (within float rounding)."""
        if self.session is None:
            raise RuntimeError("this encoder was loaded without an ONNX Runtime session (session=False)")
        parts = [(rows, *self.session.run(["token_logits", "sentiment_logits"], inputs))
                 for rows, inputs in buckets(prepared, bucket)]
        return assemble(prepared, parts)

    # -- post-processing ------------------------------------------------------------------------------------------
    def finish(self, texts: list[str], prepared: Prepared, token_logits: np.ndarray,
               sentiment_logits: np.ndarray) -> list[dict]:
        entities: list[list[dict]] = [[] for _ in texts]
        sentiment_sum = np.zeros((len(texts), 3))
        weight = np.zeros(len(texts))
        token_probs = softmax(token_logits)
        for row, t in enumerate(prepared.row_text):
            n = len(prepared.offsets[row])
            entities[t].extend(self._spans(texts[t], prepared.offsets[row], token_probs[row, 1:n + 1]))
            # a long text's sentiment is its windows' logits averaged by window length
            sentiment_sum[t] += sentiment_logits[row] * max(n, 1)
            weight[t] += max(n, 1)
        out = []
        for t in range(len(texts)):
            out.append({"entities": entities[t], "sentiment": self.sentiment(sentiment_sum[t] / max(weight[t], 1))})
        return out

    def sentiment(self, logits: np.ndarray) -> dict:
        p = softmax(logits)
        neg, neu, pos = (float(x) for x in p)
        label = self.sentiment_labels[int(p.argmax())]
        # score in [-1, 1] like VADER's compound; intensity from the winning class's probability
        score = pos - neg
        confidence = float(p.max())
        intensity = "low" if label == "neutral" or confidence < 0.6 else "medium" if confidence < 0.85 else "high"
        # polarity: the binary SST-2 decision (the head was trained on it with the neutral logit left out)
        polarity = "positive" if logits[2] > logits[0] else "negative"
        return {"label": label, "intensity": intensity, "score": round(score, 4), "polarity": polarity,
                "probabilities": {"negative": round(neg, 4), "neutral": round(neu, 4), "positive": round(pos, 4)},
                "model": self.name}

    def _spans(self, text: str, offsets: list[tuple[int, int]], probs: np.ndarray) -> list[dict]:
        """IOB2 over sub-tokens (seqeval's rule: an I- that does not continue its type starts an entity); a span
        runs from its first token's start to its last token's end, so it indexes the original text."""
        best = probs.argmax(-1)
        tags = [self.ner_labels[int(b)] for b in best[:len(offsets)]]
        # a word piece inside a run of letters and digits ("##" in the vocabulary) takes its word's decision (the
        # training labels' rule; CoNLL scoring reads a word's first sub-token); punctuation pieces keep their own.
        # Chosen on CoNLL en val through the service's path (joined sentences, routing, micro-batches): entity F1
        # 0.9200 -> 0.9212 for version 4
        for k in range(1, len(offsets)):
            start = offsets[k][0]
            if start == offsets[k - 1][1] and 0 < start < len(text) and text[start - 1].isalnum() \
                    and text[start].isalnum():
                tags[k] = "O" if tags[k - 1] == "O" else "I-" + tags[k - 1][2:]
        spans: list[dict[str, Any]] = []
        current: dict[str, Any] | None = None
        for k, (start, end) in enumerate(offsets):
            tag = tags[k]
            prefix, kind = (tag[0], tag[2:]) if tag != "O" else ("O", "")
            # a sub-token inside a word continues the word's entity even if tagged B- (the word is one unit)
            inside_word = current is not None and start == current["end"] and kind == current["kind"]
            if prefix == "B" and not inside_word or prefix == "I" and (current is None or current["kind"] != kind):
                if current:
                    spans.append(current)
                current = {"kind": kind, "start": start, "end": end, "probs": [float(probs[k].max())]}
            elif prefix in "BI" and current is not None:
                current["end"] = end
                current["probs"].append(float(probs[k].max()))
            else:
                if current:
                    spans.append(current)
                current = None
        if current:
            spans.append(current)
        labels = {"PER": "PERSON", "LOC": "LOCATION", "ORG": "ORG", "MISC": "MISC"}
        return [{"text": text[s["start"]:s["end"]], "label": labels[s["kind"]], "start": s["start"], "end": s["end"],
                 "confidence": round(float(np.mean(s["probs"])), 4), "model": self.name} for s in spans]

    def word_tags(self, sentences: list[list[str]], token_logits: np.ndarray, words: list[list[int | None]],
                  row_text: list[int]) -> list[list[str]]:
        """CoNLL scoring: each word's tag is its first sub-token's."""
        tags = [["O"] * len(s) for s in sentences]
        seen: list[set[int]] = [set() for _ in sentences]
        best = token_logits.argmax(-1)
        for row, t in enumerate(row_text):
            for k, w in enumerate(words[row]):
                if w is not None and w not in seen[t]:
                    seen[t].add(w)
                    tags[t][w] = self.ner_labels[int(best[row, k + 1])]
        return tags

    def predict(self, texts: list[str]) -> list[dict]:
        prepared = self.prepare(texts)
        token_logits, sentiment_logits = self.run(prepared)
        return self.finish(texts, prepared, token_logits, sentiment_logits)
