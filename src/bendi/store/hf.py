"""Hugging Face layout models in the store: a directory of config, tokenizer and safetensors
files, as vLLM loads them.

Each file is a content-addressed blob like a GGUF file; the manifest lists them (`files`: path ->
digest) and its `model.digest` is the digest of that list (the tree). vLLM needs a directory, so
the tree is materialized as `trees/sha256-<tree>/`, a directory of symbolic links to the blobs:
nothing is stored twice, and two names for the same files share one tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from bendi.errors import InvalidModelFile

#: files a model directory carries besides the weights (others, such as README.md or the
#: original PyTorch .bin files, are not imported)
_MODEL_FILES = {
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "chat_template.jinja", "chat_template.json", "vocab.json",
    "merges.txt", "tokenizer.model", "added_tokens.json", "preprocessor_config.json",
    "model.safetensors.index.json",
}
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def model_files(directory: Path) -> list[Path]:
    """The files of a Hugging Face model directory that the store keeps, checked: config.json,
    a tokenizer, and complete safetensors weights. InvalidModelFile says what is missing."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise InvalidModelFile(f"{directory}: not a directory")
    if not (directory / "config.json").is_file():
        raise InvalidModelFile(f"{directory}: no config.json; is this a Hugging Face model directory?")
    weights = sorted(directory.glob("*.safetensors"))
    if not weights:
        bins = list(directory.glob("*.bin")) + list(directory.glob("*.pt"))
        hint = (" (it has PyTorch .bin files: save it with safetensors, which cannot run code "
                "when loaded)") if bins else ""
        raise InvalidModelFile(f"{directory}: no .safetensors weights{hint}")
    if not any((directory / t).is_file() for t in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise InvalidModelFile(f"{directory}: no tokenizer (tokenizer.json, tokenizer.model or vocab.json)")
    for path in weights:
        safetensors_header(path)  # raises when truncated or not safetensors
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        wanted = set(_read_json(index).get("weight_map", {}).values())
        missing = sorted(w for w in wanted if not (directory / w).is_file())
        if missing:
            raise InvalidModelFile(f"{directory}: the weight index names missing files: {', '.join(missing)}")
    extra = sorted(p for p in directory.iterdir() if p.is_file() and p.name in _MODEL_FILES)
    return sorted(set(weights) | set(extra))


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, after checking that the data it describes is all
    there."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise InvalidModelFile(f"{path}: too short to be a safetensors file")
            (length,) = struct.unpack("<Q", raw)
            if length > min(size - 8, 100 * 1024 * 1024):
                raise InvalidModelFile(f"{path}: not a safetensors file (header of {length} bytes)")
            header = json.loads(fh.read(length))
    except OSError as exc:
        raise InvalidModelFile(f"{path}: cannot read ({exc.strerror})") from exc
    except ValueError as exc:
        raise InvalidModelFile(f"{path}: not a safetensors file (unreadable header)") from exc
    end = 0
    for name, entry in header.items():
        if name != "__metadata__":
            end = max(end, int(entry["data_offsets"][1]))
    if 8 + length + end > size:
        raise InvalidModelFile(f"{path}: truncated safetensors file ({size} bytes, needs "
                               f"{8 + length + end}); copy it again")
    return dict(header)


def tree_digest(files: dict[str, str]) -> str:
    """The digest of a model directory: sha256 over its sorted 'path digest' lines."""
    lines = "".join(f"{name} {digest}\n" for name, digest in sorted(files.items()))
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def describe_hf(directory: Path) -> dict[str, Any]:
    """What `list`, `show` and the APIs report about a Hugging Face model directory."""
    config = _read_json(directory / "config.json")
    nested = config.get("text_config")  # multimodal configs keep the language model's inside
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    params = 0
    dtypes: dict[str, int] = {}
    for path in sorted(Path(directory).glob("*.safetensors")):
        for name, entry in safetensors_header(path).items():
            if name == "__metadata__":
                continue
            n = 1
            for d in entry["shape"]:
                n *= int(d)
            params += n
            dtypes[entry["dtype"]] = dtypes.get(entry["dtype"], 0) + n * _DTYPE_BYTES.get(entry["dtype"], 1)
    quant = (config.get("quantization_config") or {}).get("quant_method")
    tok = _read_json(directory / "tokenizer_config.json")
    template = (directory / "chat_template.jinja").is_file() or isinstance(tok.get("chat_template"), str)
    arch = str(text.get("model_type") or config.get("model_type") or "unknown")
    return {
        "format": "safetensors",
        "architecture": arch,
        "family": arch,
        "architectures": list(config.get("architectures") or []),
        "parameter_count": params,
        "parameter_size": f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M",
        "quantization_level": str(quant).upper() if quant else (max(dtypes, key=dtypes.__getitem__) if dtypes else "unknown"),
        "context_length": text.get("max_position_embeddings"),
        "embedding_length": text.get("hidden_size"),
        "block_count": text.get("num_hidden_layers"),
        "head_count": text.get("num_attention_heads"),
        "head_count_kv": text.get("num_key_value_heads") or text.get("num_attention_heads"),
        "general_name": config.get("_name_or_path") or config.get("_model_name_or_path"),
        "license": None,
        "has_chat_template": template,
        "pooling_type": None,
    }


def facts(directory: Path) -> dict[str, Any]:
    """The architecture facts of `bendi show` for a Hugging Face model (what a GGUF header gives
    for GGUF models)."""
    details = describe_hf(directory)
    config = _read_json(directory / "config.json")
    template = None
    path = directory / "chat_template.jinja"
    if path.is_file():
        template = path.read_text(encoding="utf-8")
    else:
        value = _read_json(directory / "tokenizer_config.json").get("chat_template")
        template = value if isinstance(value, str) else None
    return {
        "architecture": details["architecture"],
        "parameter_count": details["parameter_count"],
        "quantization": details["quantization_level"],
        "context_length": details["context_length"],
        "embedding_length": details["embedding_length"],
        "block_count": details["block_count"],
        "head_count": details["head_count"],
        "head_count_kv": details["head_count_kv"],
        "chat_template": template,
        "license": None,
        "general_name": details["general_name"],
        "metadata": {k: v for k, v in config.items() if not isinstance(v, dict | list)},
    }


def materialize(tree: Path, blobs: Path, files: dict[str, str]) -> None:
    """Make `tree` a directory of symbolic links, one per file, to its blob (atomically: built
    beside it and renamed into place)."""
    if tree.is_dir():
        return
    tree.parent.mkdir(parents=True, exist_ok=True)
    tmp = tree.with_name(f".partial-{os.getpid()}-{tree.name}")
    tmp.mkdir()
    for name, digest in files.items():
        (tmp / name).symlink_to(os.path.relpath(blobs / digest.replace(":", "-"), tmp))
    try:
        os.rename(tmp, tree)
    except OSError:  # another process made the same tree meanwhile
        for link in tmp.iterdir():
            link.unlink()
        tmp.rmdir()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
