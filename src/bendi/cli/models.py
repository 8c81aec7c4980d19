"""Model store commands: list, show, import, create, rm, cp."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import httpx

from bendi.cli.common import echo_json, human_age, human_bytes, services, table
from bendi.config import Settings
from bendi.errors import InvalidRequest, ModelNotFound
from bendi.store import ModelRecord


def record_summary(record: ModelRecord) -> dict[str, Any]:
    d = record.details
    return {
        "name": str(record.name),
        "digest": record.digest,
        "size": record.size,
        "family": d.get("family"),
        "parameter_size": d.get("parameter_size"),
        "quantization": d.get("quantization_level"),
        "modified_at": record.modified,
    }


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_models(ctx: click.Context, as_json: bool) -> None:
    """List installed models."""
    records = services(ctx).store.list()
    if as_json:
        echo_json([record_summary(r) for r in records])
        return
    rows = [
        (
            str(r.name),
            r.digest.split(":")[-1][:12],
            human_bytes(r.size),
            r.details.get("family"),
            r.details.get("parameter_size"),
            r.details.get("quantization_level"),
            human_age(r.modified),
        )
        for r in records
    ]
    click.echo(table(["NAME", "ID", "SIZE", "FAMILY", "PARAMETERS", "QUANTIZATION", "MODIFIED"], rows))


@click.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--template", "only_template", is_flag=True, help="Print only the chat template.")
@click.pass_context
def show(ctx: click.Context, model: str, as_json: bool, only_template: bool) -> None:
    """Show a model's architecture, size, quantization, context, template and license."""
    data = services(ctx).store.get(model).facts()
    if as_json:
        echo_json(data)
        return
    if only_template:
        click.echo(data["chat_template"] or "(none)")
        return
    rows = [
        ("architecture", data["architecture"]),
        ("parameters", f"{data['parameter_size']} ({data['parameter_count']:,})"),
        ("quantization", data["quantization"]),
        ("context length", data["context_length"]),
        ("embedding length", data["embedding_length"]),
        ("layers", data["block_count"]),
        ("heads / kv heads", f"{data['head_count']} / {data['head_count_kv']}"),
        ("size", human_bytes(data["size"])),
        ("license", data["license"] or "unknown"),
        ("digest", data["digest"]),
        ("file", data["path"]),
    ]
    if data["system"]:
        rows.append(("system", data["system"]))
    if data["parameters"]:
        rows.append(("parameters", " ".join(f"{k}={v}" for k, v in data["parameters"].items())))
    click.echo(f"  Model {data['name']}")
    click.echo("\n".join(f"    {k:<18}{v}" for k, v in rows))
    template = data["chat_template"]
    click.echo(f"\n  Chat template ({data['template_source']})")
    if template:
        first = template.strip().splitlines()
        click.echo("    " + "\n    ".join(first[:6]) + ("\n    ..." if len(first) > 6 else ""))
    else:
        click.echo("    (none: chat needs --template on import; completions still work)")


def parse_params(items: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"--param {item!r}: use key=value, e.g. temperature=0.6")
        params[key.strip()] = _number(value.strip())
    return params


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@click.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name", "-n", help="Name to register, name[:tag] (a GGUF file or model directory needs one).")
@click.option("--system", help="Default system prompt.")
@click.option("--template", "template_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Jinja chat template file overriding the one in the GGUF.")
@click.option("--param", "params", multiple=True, help="Default parameter key=value (repeatable).")
@click.option("--copy", "copy_file", is_flag=True, help="Always copy the file (default: hard link when possible).")
@click.option("--trust", type=click.Path(exists=True, path_type=Path), multiple=True,
              help="Bundles: accept only one signed by this public key (file or directory; repeatable).")
@click.option("--force", is_flag=True, help="Bundles: replace models and knowledge bases of the same name.")
@click.pass_context
def import_cmd(ctx: click.Context, file: Path, name: str | None, system: str | None, template_file: Path | None,
               params: tuple[str, ...], copy_file: bool, trust: tuple[Path, ...], force: bool) -> None:
    """Import a GGUF model file, a Hugging Face model directory (config.json, tokenizer,
    *.safetensors; served by vLLM), or a bundle written by `bendi export`, into the store."""
    from bendi.store.bundle import is_bundle

    if is_bundle(file):
        from bendi.cli.transfer import import_bundle_cli

        import_bundle_cli(ctx, file, trust, force)
        return
    if not name:
        raise click.UsageError("Missing option '--name' / '-n' (needed to import a model).")
    template = template_file.read_text(encoding="utf-8") if template_file else None
    store = services(ctx).store
    link = "copy" if copy_file else "auto"
    if file.is_dir():
        if template is not None:
            raise InvalidRequest("--template applies to GGUF files; a model directory carries its "
                                 "template in tokenizer_config.json or chat_template.jinja")
        record = store.import_dir(file, name, parameters=parse_params(params), system=system, link=link)
    else:
        record = store.import_file(file, name, parameters=parse_params(params), system=system,
                                   template=template, link=link)
    d = record.details
    click.echo(f"imported {record.name}: {d.get('family')} {d.get('parameter_size')} "
               f"{d.get('quantization_level')} {d.get('format', 'gguf')}, {human_bytes(record.size)}")


@click.command("create")
@click.argument("name")
@click.option("--from", "source", required=True, help="The model to start from.")
@click.option("--quantize", "-q", help="Re-quantize with llama.cpp: q8_0, q4_k_m, q5_k_m, q6_k, f16, ...")
@click.option("--allow-requantize", is_flag=True,
              help="Allow quantizing an already quantized model to a coarser type.")
@click.option("--system", help="Default system prompt (default: the source's).")
@click.option("--param", "params", multiple=True, help="Default parameter key=value (repeatable).")
@click.option("--format", "model_format", type=click.Choice(["gguf", "safetensors"]),
              help="safetensors: convert a GGUF model to the Hugging Face layout vLLM serves "
                   "(runs in the vLLM environment).")
@click.option("--engine", help="Engine that serves this model (llama.cpp, vllm); default: by format.")
@click.pass_context
def create(ctx: click.Context, name: str, source: str, quantize: str | None, allow_requantize: bool,
           system: str | None, params: tuple[str, ...], model_format: str | None,
           engine: str | None) -> None:
    """Create model NAME from another one, re-quantized, converted or with other defaults.

    \b
    bendi create smollm2:135m-q8_0 --from smollm2:135m --quantize q8_0
    bendi create smollm2:135m-hf --from smollm2:135m --format safetensors
    """
    svc = services(ctx)
    replaced = _existing(svc.store, name)
    if model_format == "safetensors":
        click.echo(f"converting {source} to safetensors with transformers (a minute or more) ...")
    if quantize:
        from bendi.runtime.quantize import check_target

        record = svc.store.get(source)
        if record.format != "gguf":
            raise InvalidRequest(f"--quantize re-quantizes GGUF files; {source} is a {record.format} model")
        info = record.gguf()
        target = check_target(quantize, info, allow_requantize=allow_requantize)  # fail before saying so
        click.echo(f"quantizing {source} ({info.quantization}) to {target.upper()} ...")
    record = svc.create_model(name, source, quantize=quantize, allow_requantize=allow_requantize,
                              system=system, parameters=parse_params(params),
                              model_format=model_format, engine=engine)
    click.echo(f"created {record.name} from {source}: {record.details.get('quantization_level')}, "
               f"{human_bytes(record.size)}")
    if replaced is not None:
        click.echo(f"replaced the previous {replaced.name} ({replaced.digest.split(':')[-1][:12]}); "
                   "its file stays while another name uses it")


def _existing(store: Any, name: str) -> ModelRecord | None:
    try:
        record: ModelRecord = store.get(name)
    except ModelNotFound:
        return None
    return record


@click.command("rm")
@click.argument("models", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, models: tuple[str, ...]) -> None:
    """Remove models (their files go when no other name uses them)."""
    settings: Settings = ctx.find_root().obj
    store = services(ctx).store
    for name in models:
        server = _server_with(settings, str(store.get(name).name))
        record = store.remove(name)
        if server is None:
            click.echo(f"deleted {record.name}")
            continue
        # the server's reaper sees the name gone from the store and unloads it (about a second)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _server_with(settings, str(record.name)) == server:
            time.sleep(0.25)
        still = _server_with(settings, str(record.name)) is not None
        click.echo(f"deleted {record.name}; the running server at {server} was using it and "
                   + ("still has it loaded" if still else "has unloaded it"))


def _server_with(settings: Settings, name: str) -> str | None:
    """The URL of the bendi server on the configured address when it has `name` loaded, else None
    (also when no server answers there)."""
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host
    url = f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    try:
        loaded = httpx.get(url + "/api/ps", headers=headers, timeout=2).json()["models"]
        return url if any(m.get("name") == name or m.get("model") == name for m in loaded) else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        return None


@click.command("cp")
@click.argument("source")
@click.argument("dest")
@click.pass_context
def cp(ctx: click.Context, source: str, dest: str) -> None:
    """Copy a model to a new name (the file is shared, not copied)."""
    record = services(ctx).store.copy(source, dest)
    click.echo(f"copied {source} to {record.name}")


def register(group: click.Group) -> None:
    for command in (list_models, show, import_cmd, create, rm, cp):
        group.add_command(command)
