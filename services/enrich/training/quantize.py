"""int8 matrix products with one activation scale per token: each text's result is independent of the texts it is
batched with.

ONNX Runtime's dynamic quantization (`quantize_dynamic`, export.py) scales each MatMul's activations by the largest
value of the whole input tensor, i.e. of every row in the request: a text's logits move with the texts that share its
batch (enough to change a few CoNLL entities between two runs of the same service). Here every MatMul with a weight
matrix becomes, in plain ONNX operators (so Triton's ONNX Runtime backend runs the same file):

    X [.., K] -> X2 [M, K];  s = max(|X2|, axis 1) / 127  (per token, symmetric)
    Xq = QuantizeLinear(X2, s, 128, axis=0)  (uint8)       Wq = round(W / w) int8, w = max(|W|, axis 0) / 127
    Y = MatMulInteger(Xq, Wq, 128) * w * s, reshaped to [.., N]

Measured on version 2 (ONNX Runtime 1.32, 1 thread, 512 demo texts, CPU seconds, 4 interleaved runs): per-tensor
dynamic int8 about 350 texts per CPU-second, per-token 311, fp32 149. Service-like validation (CoNLL en val joined
with spaces, the service's routing, random micro-batches of 256 in three orders): per-tensor int8 entity F1
0.9231-0.9241 depending on the order, fp32 0.9246, per-token 0.9251 in every order.

    python services/enrich/training/quantize.py SRC.onnx DST.onnx
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def quantize_per_token(src: Path, dst: Path) -> int:
    """Writes `dst`; returns the number of MatMul nodes converted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    added: list = []

    def const(name: str, value: np.ndarray) -> str:
        added.append(numpy_helper.from_array(value, name))
        return name

    c127 = const("ptq_127", np.array(127.0, np.float32))
    eps = const("ptq_eps", np.array(1e-8, np.float32))
    zero = const("ptq_0", np.array(0.0, np.float32))
    c128 = const("ptq_128", np.array(128.0, np.float32))
    zero_point = const("ptq_zp", np.array(128, np.uint8))
    nodes: list = []
    quantized: dict[str, str] = {}  # activation -> prefix of its quantization (Q, K and V share one input)
    converted = 0
    for node in graph.node:
        w = numpy_helper.to_array(weights[node.input[1]]) if node.op_type == "MatMul" and \
            node.input[1] in weights else None
        if w is None or w.ndim != 2:
            nodes.append(node)
            continue
        p = f"ptq{converted}_"
        converted += 1
        scale = (np.abs(w).max(0) / 127.0).astype(np.float32)
        scale[scale == 0] = 1.0
        wq = const(p + "w", np.clip(np.round(w / scale), -127, 127).astype(np.int8))
        ws = const(p + "ws", scale)
        x = node.input[0]
        if x not in quantized:
            q = quantized[x] = f"ptq_x{len(quantized)}_"
            nodes += [
                helper.make_node("Reshape", [x, const(q + "2d", np.array([-1, w.shape[0]], np.int64))], [q + "x2"]),
                helper.make_node("Abs", [q + "x2"], [q + "abs"]),
                helper.make_node("ReduceMax", [q + "abs"], [q + "max"], keepdims=0, axes=[1]),
                helper.make_node("Div", [q + "max", c127], [q + "s0"]),
                helper.make_node("Max", [q + "s0", eps], [q + "s"]),
                helper.make_node("Mul", [q + "s", zero], [q + "z0"]),
                helper.make_node("Add", [q + "z0", c128], [q + "z1"]),
                helper.make_node("Cast", [q + "z1"], [q + "zp"], to=TensorProto.UINT8),
                helper.make_node("QuantizeLinear", [q + "x2", q + "s", q + "zp"], [q + "xq"], axis=0),
                helper.make_node("Unsqueeze", [q + "s", const(q + "ax1", np.array([1], np.int64))], [q + "s2"]),
                helper.make_node("Shape", [x], [q + "shape"]),
                helper.make_node("Slice", [q + "shape", const(q + "b0", np.array([0], np.int64)),
                                           const(q + "e", np.array([-1], np.int64))], [q + "lead"]),
            ]
        q = quantized[x]
        nodes += [
            helper.make_node("MatMulInteger", [q + "xq", wq, zero_point], [p + "acc"]),
            helper.make_node("Cast", [p + "acc"], [p + "accf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [p + "accf", ws], [p + "y0"]),
            helper.make_node("Mul", [p + "y0", q + "s2"], [p + "y1"]),
            helper.make_node("Concat", [q + "lead", const(p + "n", np.array([w.shape[1]], np.int64))],
                             [p + "shape"], axis=0),
            helper.make_node("Reshape", [p + "y1", p + "shape"], [node.output[0]]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for n in graph.node for name in n.input}
    kept = [t for t in [*graph.initializer, *added] if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return converted


if __name__ == "__main__":
    print(quantize_per_token(Path(sys.argv[1]), Path(sys.argv[2])), "MatMul nodes converted")
