"""A small, dependency-free GGUF header reader.

It reads the metadata key/values and the tensor table, which is all bendi needs to verify a file
before it enters the store (magic, version, readable metadata, tensor data not truncated) and to
describe a model (architecture, parameter count, quantization, context length, chat template).
Large arrays (tokenizer vocabularies) are skipped and summarised by their length.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bendi.errors import InvalidModelFile

MAGIC = b"GGUF"
_ARRAY_KEEP = 64  # arrays longer than this are summarised, not kept

# value type id -> struct format (scalars only)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# ggml tensor type id -> (name, elements per block, bytes per block), from ggml's type traits
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4),
    27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}

# llama.cpp's general.file_type values (LLAMA_FTYPE_*)
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
}


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def n_bytes(self) -> int | None:
        traits = GGML_TYPES.get(self.type_id)
        if traits is None:
            return None
        _, block, size = traits
        return self.n_elements // block * size


@dataclass
class GGUFInfo:
    """What the header of a GGUF file says."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0
    file_size: int = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch(self, key: str, default: Any = None) -> Any:
        """An architecture-scoped key such as `context_length` (`llama.context_length`)."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def parameter_count(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def quantization(self) -> str:
        ft = self.metadata.get("general.file_type")
        if isinstance(ft, int) and ft in FILE_TYPES:
            return FILE_TYPES[ft]
        # No file_type: name the most common tensor type by bytes.
        by_type: dict[str, int] = {}
        for t in self.tensors:
            name = GGML_TYPES.get(t.type_id, (f"type{t.type_id}", 1, 1))[0]
            by_type[name] = by_type.get(name, 0) + (t.n_bytes or 0)
        return max(by_type, key=lambda k: by_type[k]) if by_type else "unknown"

    @property
    def context_length(self) -> int | None:
        value = self.arch("context_length")
        return int(value) if value is not None else None

    @property
    def embedding_length(self) -> int | None:
        value = self.arch("embedding_length")
        return int(value) if value is not None else None

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes or 0 for t in self.tensors)


class _Reader:
    def __init__(self, fh: BinaryIO, path: Path) -> None:
        self.fh = fh
        self.path = path

    def read(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise InvalidModelFile(f"{self.path}: file ends inside the GGUF header (truncated?)")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > 1 << 30:
            raise InvalidModelFile(f"{self.path}: corrupt GGUF header (string of {n} bytes)")
        return self.read(n).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.unpack("<Q")
        if n > 1 << 30:
            raise InvalidModelFile(f"{self.path}: corrupt GGUF header (string of {n} bytes)")
        self.fh.seek(n, 1)

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype = self.unpack("<I")
            count = self.unpack("<Q")
            if count > 1 << 32:
                raise InvalidModelFile(f"{self.path}: corrupt GGUF header (array of {count})")
            if count <= _ARRAY_KEEP:
                return [self.value(etype) for _ in range(count)]
            if etype in _SCALARS:
                self.fh.seek(struct.calcsize(_SCALARS[etype]) * count, 1)
            elif etype == _STRING:
                for _ in range(count):
                    self.skip_string()
            else:
                for _ in range(count):
                    self.value(etype)
            return {"array_of": etype, "count": count}
        raise InvalidModelFile(f"{self.path}: corrupt GGUF header (unknown value type {vtype})")


def read_gguf(path: str | Path) -> GGUFInfo:
    """Read and check a GGUF header; raise InvalidModelFile with a clear reason if it is not sound."""
    path = Path(path)
    try:
        size = path.stat().st_size
        fh = path.open("rb")
    except OSError as exc:
        raise InvalidModelFile(f"{path}: cannot read file ({exc.strerror})") from exc
    with fh:
        magic = fh.read(4)
        if magic != MAGIC:
            raise InvalidModelFile(f"{path}: not a GGUF model file (bad magic {magic!r})")
        r = _Reader(fh, path)
        version = r.unpack("<I")
        if version not in (2, 3):
            raise InvalidModelFile(f"{path}: unsupported GGUF version {version}")
        n_tensors = r.unpack("<Q")
        n_kv = r.unpack("<Q")
        if n_tensors > 1 << 24 or n_kv > 1 << 20:
            raise InvalidModelFile(f"{path}: corrupt GGUF header (implausible counts)")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            metadata[key] = r.value(r.unpack("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.unpack("<I")
            if n_dims > 8:
                raise InvalidModelFile(f"{path}: corrupt GGUF tensor table ({name})")
            shape = tuple(r.unpack("<Q") for _ in range(n_dims))
            tensors.append(TensorInfo(name, shape, r.unpack("<I"), r.unpack("<Q")))
        alignment = int(metadata.get("general.alignment", 32)) or 32
        pos = fh.tell()
        data_offset = (pos + alignment - 1) // alignment * alignment

    info = GGUFInfo(path, version, metadata, tensors, data_offset, size)
    end = data_offset
    for t in tensors:
        nbytes = t.n_bytes
        if nbytes is not None:
            end = max(end, data_offset + t.offset + nbytes)
    if end > size:
        raise InvalidModelFile(
            f"{path}: truncated GGUF file ({size} bytes, tensor data needs {end}); "
            "copy it again or re-download it"
        )
    return info
