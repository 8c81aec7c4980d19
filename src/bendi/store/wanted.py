"""What the user asked `bendi pull` for, and what it means on each kind of source.

- a catalog name: `deepseek-r1:7b`, with the quantization `bendi plan` recommends here, or one
  picked in the tag (`deepseek-r1:7b-q8_0`); `deepseek-r1` alone means `deepseek-r1:7b`
- a file in a repository: `bartowski/Qwen2.5-0.5B-Instruct-GGUF/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf`
  (on an http or path source: the file's path under the directory)
- any other `[namespace/]model[:tag]`: passed to Ollama registries as it is
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from bendi.errors import InvalidRequest
from bendi.planner.catalog import DEFAULT_QUANT, QUANT_ORDER, CatalogModel, load_catalog
from bendi.store.names import ModelName, parse_name

#: picks a quantization for a catalog model: (quant, why)
QuantChooser = Callable[[CatalogModel], tuple[str, str]]
#: a bare family name means this size, as `ollama pull deepseek-r1` did when the distills shipped
FAMILY_DEFAULT = {"deepseek-r1": "7b", "deepseek-v3": "671b"}
#: where GGUF conversions of a catalog model live on a Hugging Face-style hub, unless a source says
DEFAULT_REPO_TEMPLATE = "bartowski/{model}-GGUF"
#: llama.cpp file types as quantization suffixes users type, and the spelling Ollama's tags use
_QUANT_SPELLINGS = {"fp16": "F16", "f16": "F16", "bf16": "BF16", "f32": "F32"}
_QUANT_RE = re.compile(r"^(?:q[2-8](?:_[0-9a-z]+)*|iq[1-4]_[a-z]+|f16|fp16|bf16|f32)$", re.I)


def normalise_quant(text: str) -> str:
    """`q4_k_m` -> `Q4_K_M`, `fp16` -> `F16`."""
    key = text.strip().lower()
    return _QUANT_SPELLINGS.get(key, key.upper())


def ollama_quant(quant: str) -> str:
    """Ollama's tag spelling: `q4_K_M`, `q8_0`, `fp16`."""
    if quant in ("F16", "F32", "BF16"):
        return quant.lower().replace("f", "fp", 1) if quant != "BF16" else "bf16"
    return "q" + quant[1:]


@dataclass(frozen=True)
class Wanted:
    """A pull request resolved as far as it can be without contacting anything."""

    text: str
    #: the name it is registered under
    name: ModelName
    catalog: CatalogModel | None = None
    quant: str | None = None
    #: why this quantization (for the user to read)
    quant_reason: str = ""
    #: `repo/file.gguf` requests: the repository and the file within it
    repo: str | None = None
    file: str | None = None

    @property
    def hf_model(self) -> str | None:
        """The catalog model's Hugging Face repository name without the organisation."""
        if self.catalog is None or not self.catalog.hf_repo:
            return None
        return self.catalog.hf_repo.split("/")[-1]

    def gguf_file(self) -> str | None:
        """The GGUF file name conversions use: `<Model>-<QUANT>.gguf`."""
        if self.file:
            return self.file.split("/")[-1]
        model = self.hf_model
        return f"{model}-{self.quant}.gguf" if model and self.quant else None

    def hf_target(self, repo_template: str | None) -> tuple[str, str] | None:
        """(repository, file) on a Hugging Face-style hub."""
        if self.repo and self.file:
            return self.repo, self.file
        model, file = self.hf_model, self.gguf_file()
        if model is None or file is None:
            return None
        return (repo_template or DEFAULT_REPO_TEMPLATE).format(model=model), file

    def ollama_target(self) -> tuple[str, str] | None:
        """(namespace/model, tag) on an Ollama registry."""
        if self.repo:
            return None
        if self.catalog is None:
            name = self.name.name if "/" in self.name.name else f"library/{self.name.name}"
            return name, self.name.tag
        family, size = self.catalog.name.split(":")
        distill = re.search(r"Distill-([A-Za-z]+)", self.catalog.hf_repo or "")
        tag = f"{size}-{distill.group(1).lower()}-distill" if distill else size
        return f"library/{family}", f"{tag}-{ollama_quant(self.quant or DEFAULT_QUANT)}"


def _catalog_entry(name: str, tag: str) -> CatalogModel | None:
    for model in load_catalog():
        if model.name == f"{name}:{tag}" or f"{name}:{tag}" in model.aliases:
            return model
    return None


def parse_wanted(text: str, *, quant_chooser: QuantChooser | None = None,
                 register_as: str | None = None) -> Wanted:
    """Turn what the user typed into a Wanted; the quantization comes from `quant_chooser(model)`
    (returning (quant, reason)) when the name does not pick one."""
    raw = text.strip()
    if raw.lower().endswith(".gguf"):
        return _file_wanted(raw, register_as)
    parsed = parse_name(raw)
    tag = parsed.tag
    if tag == "latest" and parsed.name in FAMILY_DEFAULT:
        tag = FAMILY_DEFAULT[parsed.name]
    size, _, quant_text = tag.partition("-")
    entry = _catalog_entry(parsed.name, size)
    if entry is None:
        return Wanted(raw, parse_name(register_as) if register_as else parsed)
    if quant_text:
        if not _QUANT_RE.match(quant_text):
            # Ollama-style tags such as `7b-qwen-distill-q8_0`: the quantization is the last part
            quant_text = quant_text.rsplit("-", 1)[-1]
        if not _QUANT_RE.match(quant_text):
            raise InvalidRequest(f"{raw!r}: {quant_text!r} is not a quantization (e.g. "
                                 f"{entry.name}-q8_0, {entry.name}-q4_k_m)", param="model")
        quant = normalise_quant(quant_text)
        reason = "asked for in the tag"
        registered = f"{entry.name}-{quant.lower()}"
    else:
        quant, reason = quant_chooser(entry) if quant_chooser else (DEFAULT_QUANT, "the usual default")
        registered = entry.name
    if quant not in entry.gguf_sizes and quant not in QUANT_ORDER:
        known = ", ".join(q.lower() for q in entry.gguf_sizes)
        raise InvalidRequest(f"{raw!r}: no {quant} conversion is known for {entry.name} ({known})",
                             param="model")
    return Wanted(raw, parse_name(register_as or registered), entry, quant, reason)


def _file_wanted(raw: str, register_as: str | None) -> Wanted:
    parts = [p for p in raw.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise InvalidRequest(f"{raw!r}: '..' is not allowed in a path", param="model")
    repo = "/".join(parts[:2]) if len(parts) >= 3 else None
    file = "/".join(parts[2:]) if repo else "/".join(parts)
    return Wanted(raw, parse_name(register_as or default_name(parts[-1])), repo=repo, file=file)


def default_name(filename: str) -> str:
    """`Qwen2.5-0.5B-Instruct-Q4_K_M.gguf` -> `qwen2.5-0.5b-instruct:q4_k_m`."""
    stem = filename[:-5] if filename.lower().endswith(".gguf") else filename
    base, _, last = stem.rpartition("-")
    if base and _QUANT_RE.match(last):
        name, tag = base, last
    else:
        name, tag = stem, "latest"
    name = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._") or "model"
    return f"{name}:{tag.lower()}"


def recommend_quant() -> QuantChooser:
    """A chooser for parse_wanted: the quantization `bendi plan` recommends on this machine
    (the machine is looked at only when a catalog name needs a choice)."""
    from bendi.planner.machine import Hardware, this_machine
    from bendi.planner.plan import plan_model

    seen: list[Hardware] = []

    def choose(model: CatalogModel) -> tuple[str, str]:
        if not seen:
            seen.append(this_machine(measure=False))
        plan = plan_model(model, seen[0])
        option = plan.llama_cpp
        if option is not None:
            return option.quantization, f"what `bendi plan {model.name}` recommends here: {plan.verdict}"
        return DEFAULT_QUANT, f"the usual default; `bendi plan {model.name}` says: {plan.verdict}"

    return choose
