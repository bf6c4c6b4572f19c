"""Serves this model repository with the Triton Inference Server that nvidia-pytriton bundles (Triton 2.51, Python
backend): every `<model>/<version>/model.onnx` that its config.pbtxt's version_policy loads is bound under the same
name and version, run by ONNX Runtime, with the
inputs that ONNX file takes (minilm_multitask: input_ids and attention_mask, from version 2 also token_type_ids) and
the outputs its config.pbtxt declares. For development, tests and benches on machines without a Triton
install; production runs `tritonserver --model-repository deploy/triton` (the ONNX Runtime backend, same files).

    .venv-triton/bin/python deploy/triton/pytriton_server.py --http-port 8010
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import sysconfig
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent


def _own_libpython() -> None:
    """Triton's Python backend stub must load this interpreter's libpython, not the system's (a different patch
    release fails to load models), so the process re-executes itself with LD_LIBRARY_PATH pointing at it."""
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    if libdir and libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *filter(None, paths)])
        os.execv(sys.executable, [sys.executable, *sys.argv])


def models(repository: Path):
    """(name, version, onnx path, max_batch_size) of every model in the repository."""
    for config in sorted(repository.glob("*/config.pbtxt")):
        text = config.read_text()
        max_batch = int(re.search(r"max_batch_size:\s*(\d+)", text).group(1))
        versions = sorted(int(p.name) for p in config.parent.iterdir()
                          if p.name.isdigit() and (p / "model.onnx").exists())
        # the versions the config's version_policy loads (as Triton does; pytriton also binds each version of a model
        # on one data socket, so two versions of one model cannot be served together here)
        if specific := re.search(r"specific\s*:\s*{\s*versions\s*:\s*\[([\d,\s]*)\]", text):
            versions = [v for v in versions if v in {int(x) for x in specific.group(1).split(",") if x.strip()}]
        elif latest := re.search(r"latest\s*:\s*{\s*(?:num_versions\s*:\s*(\d+))?", text):
            versions = versions[-int(latest.group(1) or 1):]
        for version in versions:
            yield config.parent.name, version, config.parent / str(version) / "model.onnx", max_batch


def infer_function(path: Path, threads: int):
    """The function serving one ONNX file, and the names of the (INT64) inputs that file takes."""
    import numpy as np
    import onnxruntime as ort
    from pytriton.decorators import batch

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    @batch
    def infer(**inputs: np.ndarray):
        token_logits, sentiment_logits = session.run(
            ["token_logits", "sentiment_logits"], {name: inputs[name].astype(np.int64) for name in names})
        return {"token_logits": token_logits, "sentiment_logits": sentiment_logits}

    return infer, names


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--http-port", type=int, default=8010)
    ap.add_argument("--grpc-port", type=int, default=8011)
    ap.add_argument("--metrics-port", type=int, default=8012)
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads per model")
    ap.add_argument("--repository", type=Path, default=REPOSITORY)
    args = ap.parse_args()
    _own_libpython()
    import numpy as np
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = TritonConfig(http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                          http_address="127.0.0.1", grpc_address="127.0.0.1")
    with Triton(config=config) as triton:
        for name, version, path, max_batch in models(args.repository):
            infer, inputs = infer_function(path, args.threads)
            triton.bind(
                model_name=name, model_version=version, infer_func=infer,
                inputs=[Tensor(name=input_name, dtype=np.int64, shape=(-1,)) for input_name in inputs],
                outputs=[Tensor(name="token_logits", dtype=np.float32, shape=(-1, -1)),
                         Tensor(name="sentiment_logits", dtype=np.float32, shape=(-1,))],
                config=ModelConfig(max_batch_size=max_batch, batcher=DynamicBatcher(max_queue_delay_microseconds=2000)),
                strict=True)
            logging.info("serving %s version %d from %s", name, version, path)
        triton.serve()


if __name__ == "__main__":
    main()
