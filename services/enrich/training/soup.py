"""A model soup: the weights of two fine-tuned versions that started from the same encoder weights, averaged, with the
mixing weight chosen on the validation subsets (Wortsman et al. 2022, "Model soups"). Two runs of train.py on
different data mixes make different errors; their average often scores above both.

Averaged at the ONNX level, since a version's PyTorch weights need not be kept (version 2's were not committed, only
its fp32 ONNX): both ingredients must be fp32 exports of the same graph (export.py's `model.fp32.onnx`, or a committed
fp32 artifact); their initializers are matched by name (by position when the names differ, shapes checked) and
averaged, `alpha` being the second ingredient's weight (alpha 0 and 1 are the ingredients themselves, scored the same
way for the table). The best alpha on the validation selection figure (mean of en val entity F1, SST-2 dev accuracy
and XLM-T en val macro recall, the figure train.py keeps its checkpoint on) is then quantized two ways, int8 MatMuls
with activations scaled per request (export.py's) and per token (quantize.py's: batch-independent); the first of
per-token, per-request that costs at most 0.005 on those figures is kept, else fp32. The work folder then looks like
a trained and exported run, so pipeline.py publishes it (test scored once, model card, CURRENT):

    python services/enrich/training/soup.py --a services/enrich/enrich/models/artifacts/minilm-multitask/2 \
        --b /tmp/enrich-train/v3 --work /tmp/enrich-train/v4 --version 4
    python services/enrich/training/pipeline.py --version 4 --skip-training --work /tmp/enrich-train/v4
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the service package: the evaluation the service's figures come from
from quantize import quantize_per_token  # noqa: E402

SELECTION = ("ner_f1_en", "sst2_dev_acc", "xlmt_en_val_macro_recall")
QUANTIZED_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "QuantizeLinear", "DequantizeLinear"}


def ingredient(path: Path) -> tuple[Path, Path, dict | None]:
    """(fp32 folder with model.onnx, config.json, tokenizer.json; its training record if any) of a run or artifact."""
    if (path / "export" / "fp32" / "model.onnx").exists():  # a train.py run exported by export.py
        train = json.loads((path / "train.json").read_text())
        return path / "export" / "fp32", path / "export" / "fp32" / "model.onnx", train
    if (path / "model.onnx").exists():  # an artifact folder (must be fp32)
        scores = path / "scores.json"
        train = json.loads(scores.read_text())["train"] if scores.exists() else None
        return path, path / "model.onnx", train
    raise SystemExit(f"{path}: neither a run exported by export.py nor an artifact folder")


def average(a_path: Path, b_path: Path, alpha: float, out: Path) -> None:
    """(1 - alpha) * A + alpha * B over every floating-point initializer; the graph is A's."""
    import onnx
    from onnx import numpy_helper
    a, b = onnx.load(str(a_path)), onnx.load(str(b_path))
    for model, path in ((a, a_path), (b, b_path)):
        quantized = {n.op_type for n in model.graph.node} & QUANTIZED_OPS
        if quantized:
            raise SystemExit(f"{path}: quantized ({', '.join(sorted(quantized))}); a soup needs fp32 ingredients")
    ops_a, ops_b = [n.op_type for n in a.graph.node], [n.op_type for n in b.graph.node]
    if ops_a != ops_b:
        raise SystemExit(f"{a_path} and {b_path} are not the same graph ({len(ops_a)} vs {len(ops_b)} nodes)")
    inits_a, inits_b = list(a.graph.initializer), list(b.graph.initializer)
    names_b = {t.name: t for t in inits_b}
    if {t.name for t in inits_a} == set(names_b):
        pairs = [(t, names_b[t.name]) for t in inits_a]
    elif len(inits_a) == len(inits_b):  # other exporter numbering: the same graph lists its weights in one order
        pairs = list(zip(inits_a, inits_b, strict=True))
    else:
        raise SystemExit(f"{a_path} and {b_path}: {len(inits_a)} vs {len(inits_b)} initializers")
    for ta, tb in pairs:
        x, y = numpy_helper.to_array(ta), numpy_helper.to_array(tb)
        if x.shape != y.shape or x.dtype != y.dtype:
            raise SystemExit(f"initializer {ta.name} {x.shape} {x.dtype} vs {tb.name} {y.shape} {y.dtype}")
        if np.issubdtype(x.dtype, np.floating):
            mixed = ((1.0 - alpha) * x.astype(np.float64) + alpha * y.astype(np.float64)).astype(x.dtype)
            ta.CopyFrom(numpy_helper.from_array(mixed, ta.name))
        elif not np.array_equal(x, y):
            raise SystemExit(f"initializer {ta.name}: integer values differ between the ingredients")
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(a, str(out))


def score(folder: Path) -> dict:
    """The validation figures of the model in `folder` (kept in its val_scores.json: a rerun does not score again)."""
    from enrich.evaluation import validation_scores
    cached = folder / "val_scores.json"
    if cached.exists():
        return json.loads(cached.read_text())
    started = time.time()
    scores = validation_scores(folder, threads=1)
    scores["selection"] = float(np.mean([scores[k] for k in SELECTION]))
    scores["targets"] = min(scores["ner_f1_en"], scores["sst2_dev_acc"])
    scores["seconds"] = round(time.time() - started, 1)
    cached.write_text(json.dumps(scores))
    return scores


def write_folder(folder: Path, model: Path, config: dict, tokenizer: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if model != folder / "model.onnx":
        shutil.copy(model, folder / "model.onnx")
    shutil.copy(tokenizer, folder / "tokenizer.json")
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", type=Path, required=True, help="first ingredient: an fp32 artifact folder or exported run")
    ap.add_argument("--b", type=Path, required=True, help="second ingredient (alpha is its weight)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--tolerance", type=float, default=0.005, help="largest val drop int8 may cost")
    ap.add_argument("--jobs", type=int, default=2, help="alphas scored in parallel (one thread each)")
    ap.add_argument("--choose", choices=["selection", "targets"], default="selection",
                    help="selection: the mean of en val F1, SST-2 dev accuracy and XLM-T en val macro recall "
                         "(train.py's checkpoint figure); targets: the smaller of en val F1 and SST-2 dev accuracy "
                         "(issue 16's two targets, both 0.88)")
    args = ap.parse_args()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder_a, model_a, train_a = ingredient(args.a)
    folder_b, model_b, train_b = ingredient(args.b)
    config_a = json.loads((folder_a / "config.json").read_text())
    config_b = json.loads((folder_b / "config.json").read_text())
    for key in ("ner_labels", "sentiment_labels", "inputs", "max_tokens"):
        if config_a.get(key) != config_b.get(key):
            raise SystemExit(f"the ingredients differ in {key}: {config_a.get(key)} vs {config_b.get(key)}")
    tokenizers = [json.loads((folder / "tokenizer.json").read_text()) for folder in (folder_a, folder_b)]
    for key in ("model", "normalizer", "pre_tokenizer", "added_tokens"):  # not truncation/padding (set at run time)
        if tokenizers[0].get(key) != tokenizers[1].get(key):
            raise SystemExit(f"the ingredients' tokenizers differ in {key}")
    config = {**config_b, "version": args.version}
    tokenizer = folder_b / "tokenizer.json"

    work = args.work
    folders = {}
    for alpha in args.alphas:
        folder = work / "soup" / f"alpha-{alpha:.2f}"
        if not (folder / "val_scores.json").exists():
            average(model_a, model_b, alpha, folder / "model.onnx")
            write_folder(folder, folder / "model.onnx", config, tokenizer)
        folders[alpha] = folder
    with ProcessPoolExecutor(args.jobs) as pool:
        table = dict(zip(folders, pool.map(score, folders.values()), strict=True))
    for alpha, scores in table.items():
        print(f"alpha {alpha:.2f}: " + json.dumps(scores), flush=True)
    for scores in table.values():  # scores cached before the criterion existed
        scores.setdefault("targets", min(scores["ner_f1_en"], scores["sst2_dev_acc"]))
    best = max(table, key=lambda alpha: table[alpha][args.choose])
    print(f"chosen alpha {best:.2f} (validation {args.choose} {table[best][args.choose]:.4f})", flush=True)

    # export.py's layout: fp32, int8 (MatMul nodes, dynamic, per channel: activations scaled per request) and
    # int8-token (quantize.py: activations scaled per token, so a text's result does not depend on its batch)
    export = work / "export"
    fp32, int8, token = export / "fp32", export / "int8", export / "int8-token"
    write_folder(fp32, folders[best] / "model.onnx", config, tokenizer)
    for folder in (int8, token):  # rewritten from this alpha: their figures are scored again
        (folder / "val_scores.json").unlink(missing_ok=True)
    int8.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(fp32 / "model.onnx"), str(int8 / "model.onnx"), weight_type=QuantType.QInt8,
                     per_channel=True, op_types_to_quantize=["MatMul"])
    write_folder(int8, int8 / "model.onnx", config, tokenizer)
    quantize_per_token(fp32 / "model.onnx", token / "model.onnx")
    write_folder(token, token / "model.onnx", config, tokenizer)
    scores = {"fp32": {k: v for k, v in table[best].items() if k not in ("selection", "targets", "seconds")}}
    with ProcessPoolExecutor(args.jobs) as pool:
        for kind, found in zip(("int8-token", "int8"), pool.map(score, (token, int8)), strict=True):
            scores[kind] = {k: v for k, v in found.items() if k not in ("selection", "targets", "seconds")}
            print(f"{kind} " + json.dumps(scores[kind]), flush=True)
    drops = {kind: max(scores["fp32"][k] - scores[kind][k] for k in SELECTION) for kind in ("int8-token", "int8")}
    # the first within tolerance: int8-token (batch-independent), int8 (slightly faster), fp32 (about 2x slower)
    chosen = next((kind for kind in ("int8-token", "int8") if drops[kind] <= args.tolerance), "fp32")
    worst = drops.get(chosen, 0.0)
    (export / "choice.json").write_text(json.dumps({
        "chosen": chosen, "worst_drop": worst, "drops": drops, "int8_ops": ["MatMul"], "scores": scores,
        "activation_scales": {"int8": "per tensor (each request)", "int8-token": "per token"}}, indent=2))
    print(f"chosen {chosen} (largest drops on val: {json.dumps(drops)})", flush=True)

    # the training record pipeline.py and the model card read: the second ingredient's run, plus the soup
    b_args = (train_b or {}).get("args", {})
    (work / "train.json").write_text(json.dumps({
        **(train_b or {}),
        "soup": {"a": str(args.a), "b": str(args.b), "a_args": (train_a or {}).get("args"), "b_args": b_args,
                 "a_validation": (train_a or {}).get("validation"), "b_validation": (train_b or {}).get("validation"),
                 "alpha": best, "choose": args.choose, "alphas": {f"{alpha:.2f}": s for alpha, s in table.items()}},
        # what pipeline.py compares with the current version: the chosen soup's selection figure
        "validation": [{"step": (train_b or {}).get("steps", 0), "epoch": 0, "alpha": best,
                        **{k: v for k, v in table[best].items() if k not in ("seconds", "targets")}}],
    }, indent=2))


if __name__ == "__main__":
    main()
