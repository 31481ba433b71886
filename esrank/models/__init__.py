"""The neural models, all from packages: the text encoder and its ONNX export and check, the
embedding cache, the cross-encoder, fine-tuning, and the local LLM.

- encoder: MiniLM encoders (NumPy reference, ONNX Runtime, torch) and `load_encoder`
- onnx_export / onnx_check: BERT -> ONNX (fp32, int8), checked against the reference
- embed_cache: embeddings kept on disk by (encoder, text)
- cross_encoder: the reranker (ONNX)
- tuning: fine-tuning the encoder and the cross-encoder on judgments
- llm: the packaged GGUF LLM the judge runs locally
"""

from __future__ import annotations

from esrank.models.cross_encoder import CrossEncoder, load_cross_encoder
from esrank.models.embed_cache import CachedEncoder, EmbeddingCache
from esrank.models.encoder import Encoder, load_encoder, same_space
from esrank.models.llm import load_llm

__all__ = [
    "CachedEncoder", "CrossEncoder", "EmbeddingCache", "Encoder", "load_cross_encoder",
    "load_encoder", "load_llm", "same_space",
]
