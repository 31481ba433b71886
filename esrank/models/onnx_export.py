"""Export BERT models to ONNX without torch: sentence encoders and cross-encoders.

The graph is written node by node from the safetensors weights, the same computation as
`NumpyBertEncoder`: embeddings -> N x (self-attention, GELU feed-forward, post-LayerNorm) ->
a head. Inputs `input_ids` (int64, batch x tokens) and `attention_mask` (float32, 1 for
tokens, 0 for padding). Heads:

- sentence encoder: masked mean -> L2 norm -> `sentence_embedding` (batch x dims);
- sequence classifier (a `*ForSequenceClassification` model, e.g. a cross-encoder): the
  first token -> pooler (dense + tanh) -> classifier -> `logits` (batch x labels); it also
  takes `token_type_ids` (int64: 0 for the query, 1 for the document).

>>> export_onnx(model_dir(), Path("minilm.onnx"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from esrank.core.errors import ConfigError
from esrank.core.files import new_file

log = logging.getLogger(__name__)

OPSET = 17  # LayerNormalization


class _Graph:
    def __init__(self, weights: dict[str, np.ndarray]):
        self.w = weights
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def op(self, kind: str, *inputs: str, **attrs) -> str:
        from onnx import helper

        self._n += 1
        out = f"{kind.lower()}_{self._n}"
        self.nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def ints(self, name: str, value: int | list[int]) -> str:
        return self.const(name, np.array(value, dtype=np.int64))

    def dense(self, x: str, name: str) -> str:
        w = self.const(name + ".wT", np.ascontiguousarray(self.w[name + ".weight"].T))
        return self.op("Add", self.op("MatMul", x, w), self.const(name + ".b",
                                                                   self.w[name + ".bias"]))

    def norm(self, x: str, name: str, eps: float) -> str:
        return self.op("LayerNormalization", x, self.const(name + ".g", self.w[name + ".weight"]),
                       self.const(name + ".bb", self.w[name + ".bias"]), axis=-1, epsilon=eps)


def is_classifier(cfg: dict) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in cfg.get("architectures") or [])


def export_onnx(path: Path, out: Path) -> Path:
    """Write `out` (an .onnx file) for the BERT model in folder `path`; the head follows
    config.json's `architectures`."""
    import onnx
    from onnx import TensorProto, helper
    from safetensors.numpy import load_file

    cfg = json.loads((path / "config.json").read_text())
    if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
        raise ConfigError(f"{path}: the ONNX export handles BERT models with GELU only")
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    w = {k.removeprefix("bert."): v.astype(np.float32)
         for k, v in load_file(str(path / "model.safetensors")).items()}
    classifier = is_classifier(cfg)
    g = _Graph(w)
    x = _embeddings(g, classifier, eps)
    one = g.const("one_f", np.array(1.0, np.float32))
    x = _encoder(g, x, cfg, one, eps)
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.FLOAT,
                                            ["batch", "tokens"])]
    if classifier:
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64,
                                                    ["batch", "tokens"]))
        output = _classifier_head(g, x)
    else:
        output = _embedding_head(g, x, int(cfg["hidden_size"]))
    graph = helper.make_graph(g.nodes, "bert", inputs, [output], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="esrank")
    onnx.checker.check_model(model)
    with new_file(out) as tmp:  # never a half-written model where a loader would find it
        onnx.save(model, str(tmp))
    return out


def _embeddings(g: _Graph, classifier: bool, eps: float) -> str:
    """Word + position (0..T-1) + token type (0, or the input's for a classifier), normed."""
    w = g.w
    t = g.op("Gather", g.op("Shape", "input_ids"), g.ints("one", 1), axis=0)
    positions = g.op("Range", g.ints("zero", 0), t, g.ints("step", 1))
    x = g.op("Add", g.op("Gather", g.const("word_emb", w["embeddings.word_embeddings.weight"]),
                         "input_ids"),
             g.op("Gather", g.const("pos_emb", w["embeddings.position_embeddings.weight"]),
                  positions))
    types = w["embeddings.token_type_embeddings.weight"]
    x = g.op("Add", x, g.op("Gather", g.const("type_emb", types), "token_type_ids")
             if classifier else g.const("type0", types[0]))
    return g.norm(x, "embeddings.LayerNorm", eps)


def _encoder(g: _Graph, x: str, cfg: dict, one: str, eps: float) -> str:
    """The N encoder layers: self-attention, then the GELU feed-forward, each post-normed."""
    d, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    # additive attention bias: 0 for tokens, -1e9 for padding, shape (N, 1, 1, T)
    bias = g.op("Mul", g.op("Sub", one, "attention_mask"), g.const("neg", np.array(-1e9,
                                                                                 np.float32)))
    bias = g.op("Unsqueeze", bias, g.ints("axes12", [1, 2]))
    split_heads = g.ints("split_heads", [0, 0, heads, d // heads])
    merge_heads = g.ints("merge_heads", [0, 0, d])
    scale = g.const("scale", np.array(1 / np.sqrt(d // heads), np.float32))
    for layer in range(int(cfg["num_hidden_layers"])):
        p = f"encoder.layer.{layer}."

        def project(name: str, perm: list[int], inp: str = x, prefix: str = p) -> str:
            h = g.op("Reshape", g.dense(inp, prefix + "attention.self." + name), split_heads)
            return g.op("Transpose", h, perm=perm)

        q, k, v = (project("query", [0, 2, 1, 3]), project("key", [0, 2, 3, 1]),
                   project("value", [0, 2, 1, 3]))
        scores = g.op("Softmax", g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), bias),
                      axis=-1)
        ctx = g.op("Reshape", g.op("Transpose", g.op("MatMul", scores, v), perm=[0, 2, 1, 3]),
                   merge_heads)
        x = g.norm(g.op("Add", x, g.dense(ctx, p + "attention.output.dense")),
                   p + "attention.output.LayerNorm", eps)
        inner = g.dense(x, p + "intermediate.dense")
        inner = g.op("Mul", g.op("Mul", inner, g.const(f"half{layer}", np.array(0.5, np.float32))),
                     g.op("Add", one, g.op("Erf", g.op("Div", inner, g.const(
                         f"sqrt2_{layer}", np.array(np.sqrt(2.0), np.float32))))))
        x = g.norm(g.op("Add", x, g.dense(inner, p + "output.dense")), p + "output.LayerNorm", eps)
    return x


def _classifier_head(g: _Graph, x: str):
    """The first token -> pooler (dense + tanh) -> classifier -> `logits`; its output info."""
    from onnx import TensorProto, helper

    first = g.op("Gather", x, g.ints("first", 0), axis=1)
    pooled = g.op("Tanh", g.dense(first, "pooler.dense"))
    labels = int(g.w["classifier.weight"].shape[0])
    head = g.dense(pooled, "classifier")
    g.nodes.append(helper.make_node("Identity", [head], ["logits"]))
    return helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", labels])


def _embedding_head(g: _Graph, x: str, d: int):
    """Masked mean, then L2 norm -> `sentence_embedding`; its output info."""
    from onnx import TensorProto, helper

    mask3 = g.op("Unsqueeze", "attention_mask", g.ints("axis2", [2]))
    summed = g.op("ReduceSum", g.op("Mul", x, mask3), g.ints("axis1", [1]), keepdims=0)
    count = g.op("Max", g.op("ReduceSum", mask3, g.ints("axis1b", [1]), keepdims=0),
                 g.const("tiny", np.array(1e-9, np.float32)))
    pooled = g.op("Div", summed, count)
    length = g.op("Max", g.op("ReduceL2", pooled, axes=[1], keepdims=1),
                  g.const("tiny2", np.array(1e-12, np.float32)))
    g.nodes.append(helper.make_node("Div", [pooled, length], ["sentence_embedding"]))
    return helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", d])


def quantize_int8(onnx_file: Path) -> Path:
    """The int8 twin of an exported graph (written once, beside it): weights of the dense
    layers quantized per output channel, activations quantized at run time; attention,
    LayerNorm and the embeddings stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = onnx_file.with_name(onnx_file.stem + "-int8.onnx")
    if not out.is_file():
        log.info("quantizing %s to int8", onnx_file)
        logging.disable(logging.WARNING)  # the quantizer's advice goes to the root logger
        try:
            with new_file(out) as tmp:
                quantize_dynamic(str(onnx_file), str(tmp), op_types_to_quantize=["MatMul"],
                                 per_channel=True, weight_type=QuantType.QInt8,
                                 extra_options={"MatMulConstBOnly": True})
        finally:
            logging.disable(logging.NOTSET)
    return out


def onnx_providers() -> tuple[list[str], str]:
    """The ONNX Runtime providers to ask for, fastest first, and why CPU when only CPU.

    With onnxruntime-gpu's `cuda,cudnn` extras the CUDA and cuDNN libraries come as Python
    packages; they are preloaded so the CUDA provider finds them without LD_LIBRARY_PATH.
    """
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return ["CPUExecutionProvider"], ("this onnxruntime has no CUDA provider "
                                          "(pip install 'esrank[gpu]' for onnxruntime-gpu)")
    try:
        ort.preload_dlls()
    except Exception as exc:  # an older onnxruntime-gpu, or the libraries from the system
        log.debug("onnxruntime.preload_dlls: %s", exc)
    return ["CUDAExecutionProvider", "CPUExecutionProvider"], ""


def onnx_session(model: Path, onnx_file: Path, precision: str = "fp32"):
    """(session, precision) for a model folder: exported to `onnx_file` first when missing;
    the CUDA provider when onnxruntime-gpu finds a GPU, else the CPU provider. int8 runs on
    the CPU only (the CUDA provider runs the fp32 graph)."""
    import onnxruntime as ort

    if not onnx_file.is_file():
        log.info("exporting %s to %s", model, onnx_file)
        export_onnx(model, onnx_file)
    wanted, why_cpu = onnx_providers()
    cuda = wanted[0] == "CUDAExecutionProvider"
    if precision == "int8" and cuda:
        log.info("int8 is a CPU precision; the CUDA provider runs %s in fp32", model.name)
        precision = "fp32"
    graph = quantize_int8(onnx_file) if precision == "int8" else onnx_file
    options = ort.SessionOptions()
    options.log_severity_level = 3  # a missing CUDA library is reported below, once
    session = ort.InferenceSession(str(graph), options, providers=wanted)
    used = session.get_providers()[0]
    if cuda and used != "CUDAExecutionProvider":
        why_cpu = "the CUDA provider did not load (no GPU visible, or CUDA/cuDNN missing)"
    log.info("ONNX Runtime runs %s (%s) on %s%s", graph.name, precision, used,
             f": CPU because {why_cpu}" if why_cpu and used == "CPUExecutionProvider" else "")
    return session, precision


