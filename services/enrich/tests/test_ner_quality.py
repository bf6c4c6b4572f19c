"""Measured precision and recall of the NER model, per label, on the labelled sample kept in data/ner_sample.jsonl
(exact span and label). The table is printed (`pytest -s` shows it); each label must stay above its floor."""

import json
from collections import Counter
from pathlib import Path

from enrich.models import get_model

SAMPLE = Path(__file__).with_name("data") / "ner_sample.jsonl"
LABELS = ("ORG", "PRODUCT", "PERSON", "LOCATION", "MONEY", "PERCENT", "DATE")
# floors under the measured figures: a change to the rules or gazetteers that loses quality fails here
FLOOR_PRECISION = 0.85
FLOOR_RECALL = 0.75


def evaluate() -> dict[str, tuple[float, float, int]]:
    model = get_model("ner")
    tp, fp, fn = Counter(), Counter(), Counter()
    for line in SAMPLE.read_text().splitlines():
        item = json.loads(line)
        gold = {(e["start"], e["end"], e["label"]) for e in item["entities"]}
        found = {(e["start"], e["end"], e["label"]) for e in model.entities(item["text"])}
        for _, _, label in found & gold:
            tp[label] += 1
        for _, _, label in found - gold:
            fp[label] += 1
        for _, _, label in gold - found:
            fn[label] += 1
    return {label: (tp[label] / ((tp[label] + fp[label]) or 1), tp[label] / ((tp[label] + fn[label]) or 1),
                    tp[label] + fn[label]) for label in LABELS}


def test_ner_precision_recall_per_label():
    scores = evaluate()
    print(f"\nNER {get_model('ner').name} {get_model('ner').version} on {SAMPLE.name}")
    print("| label | precision | recall | gold |\n|---|---|---|---|")
    for label, (p, r, n) in scores.items():
        print(f"| {label} | {p:.2f} | {r:.2f} | {n} |")
    low = {label: (round(p, 2), round(r, 2)) for label, (p, r, _) in scores.items()
           if p < FLOOR_PRECISION or r < FLOOR_RECALL}
    assert not low, f"labels under the floor (precision {FLOOR_PRECISION}, recall {FLOOR_RECALL}): {low}"
    assert all(n >= 10 for _, _, n in scores.values()), "every label needs at least 10 gold entities in the sample"
