"""Records the score floors of services/enrich/tests/test_quality.py for the current artifact: its figures on the
fixed test subsets the tests use, minus a margin for ONNX Runtime versions and CPUs (the evaluation is deterministic).
Run after a new model version is chosen (pipeline.py does):

    python services/enrich/training/floors.py
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SERVICE))

SUBSET = {"ner": 500, "sentiment": 872}
MARGIN = 0.01


def main() -> None:
    from enrich.datasets import NER_LANGS, read_conll
    from enrich.evaluation import encoder_ner, encoder_sentiment, sentiment_scores
    from enrich.models.transformer import MultitaskModel

    model = MultitaskModel(threads=2)
    floor = lambda x: math.floor((x - MARGIN) * 1000) / 1000  # noqa: E731
    ner = {lang: encoder_ner(model, read_conll(lang, "test")[:SUBSET["ner"]]) for lang in NER_LANGS}
    sentiment = sentiment_scores(encoder_sentiment(model), "test", SUBSET["sentiment"])
    floors = {
        "model": f"{model.name}:{model.version}",
        "subset": SUBSET,
        "measured": {"ner_f1": {k: v["f1"] for k, v in ner.items()}, "ner_f1_en_per_type": ner["en"]["per_type"],
                     **sentiment},
        "ner_f1": {k: floor(v["f1"]) for k, v in ner.items()},
        "ner_f1_en_per_type": {k: floor(v) for k, v in ner["en"]["per_type"].items()},
        "sst2_test_accuracy": floor(sentiment["sst2_test_accuracy"]),
        "tweeteval_val_macro_recall": floor(sentiment["tweeteval_val_macro_recall"]),
        # the 570 TweetEval val tweets not in XLM-T English train (the encoder trained on the others)
        "tweeteval_val_unseen_macro_recall": floor(sentiment["tweeteval_val_unseen_macro_recall"]),
        "pinned": {"conll_en_test_first_words": read_conll("en", "test")[0][0][:3]},
    }
    path = SERVICE / "tests" / "data" / "score_floors.json"
    path.write_text(json.dumps(floors, indent=2) + "\n")
    print(json.dumps(floors, indent=2))


if __name__ == "__main__":
    main()
