"""`bendi doctor` (what this machine has) and `bendi plan` (what runs on it)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from bendi.cli.common import echo_json, human_bytes, services, table
from bendi.config import Settings
from bendi.planner import hardware
from bendi.planner.catalog import CatalogModel
from bendi.planner.inventory import hardware_dict, models_to_plan
from bendi.planner.machine import Hardware, parse_gpus, parse_size, this_machine
from bendi.planner.plan import ModelPlan, plan_models
from bendi.runtime.llama.build import BuildAdvice, EngineBuild, build_advice

#: bumped when a key of the --json output changes meaning or disappears
SCHEMA_VERSION = 1


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema in docs/planner.md).")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Show this machine: CPU, memory, disk, accelerators, and the llama.cpp build."""
    settings: Settings = ctx.find_root().obj
    report = hardware.detect(settings.home)
    advices = engine_advice(report)
    if as_json:
        echo_json({"schema": SCHEMA_VERSION, **report.to_dict(),
                   "engine_advice": [{**asdict(a), "message": a.message()} for a in advices]})
        return
    cpu = report.cpu
    flags = " ".join(k.upper() for k, v in cpu.flags.items() if v) or "none detected"
    rows: list[tuple[str, str]] = [
        ("OS", f"{report.os} ({report.arch})"),
        ("CPU", cpu.model),
        ("Cores", f"{cpu.physical_cores} physical, {cpu.logical_cores} logical"),
        ("SIMD", flags),
        ("Memory", f"{human_bytes(report.memory_total)} total, {human_bytes(report.memory_available)} available"),
        ("Disk", f"{human_bytes(report.disk_free)} free under {report.disk_path}"),
    ]
    click.echo(table(["Machine", ""], rows))
    click.echo("")
    acc_rows = []
    for tool in report.tools:
        if not tool.found:
            acc_rows.append((tool.tool, "not found", ""))
        elif tool.error:
            acc_rows.append((tool.tool, "error", tool.error))
        elif not tool.devices:
            acc_rows.append((tool.tool, "no devices", ""))
        for d in tool.devices:
            mem = human_bytes(d.memory_total)
            if d.memory_used is not None:
                mem += f" ({human_bytes(d.memory_free)} free)"
            if d.unified:
                mem += " unified"
            acc_rows.append((tool.tool, f"#{d.index} {d.name}", mem))
    click.echo(table(["Accelerator tool", "Device", "Memory"], acc_rows))
    click.echo("")
    click.echo(table(["Engine", ""], engine_rows(report.llama_cpp)))
    for advice in advices:
        click.echo(click.style(f"warning: {advice.message()}", fg="yellow"))
    if report.llama_cpp.get("amx"):
        allowed = settings.amx
        click.echo(f"note: this build has AMX kernels; bendi {'uses them (BENDI_AMX=1)' if allowed else 'turns them off (they crash on recent Xeons); BENDI_AMX=1 uses them'}")


def rebuild_command() -> str:
    """`make install GPU={gpu}` where bendi's checkout is, for the advice lines."""
    import bendi

    root = Path(bendi.__file__).resolve().parents[2]
    if (root / "Makefile").is_file() and (root / "scripts" / "build_llama.py").is_file():
        return f"make -C {root} install GPU={{gpu}}"
    return "make install GPU={gpu} (in bendi's source checkout)"


def engine_advice(report: hardware.MachineReport) -> list[BuildAdvice]:
    """GPUs on this machine that the installed llama.cpp build cannot use."""
    build = EngineBuild(**report.llama_cpp) if report.llama_cpp.get("installed") else EngineBuild(False)
    gpus = {t.tool: [d.name for d in t.devices] for t in report.tools if t.devices}
    return build_advice(build, gpus, rebuild_command())


def engine_rows(ll: dict[str, Any]) -> list[tuple[str, str]]:
    """The llama.cpp build as doctor prints it (from `EngineBuild.to_dict()`)."""
    if not ll.get("installed"):
        return [("llama.cpp", f"not installed ({ll.get('error')}); run `make install`")]
    origin = "bendi's build" if ll.get("origin") == "bendi" else "not built by bendi"
    rows = [("llama.cpp", f"llama-cpp-python {ll['version']} ({origin})")]
    available = ll.get("cpu_variants_available") or []
    variant = ll.get("cpu_variant")
    if available:
        rows.append(("CPU code", f"{variant or 'none loaded'} variant, chosen for this CPU from "
                                 f"{len(available)}: {' '.join(available)}"))
    else:
        rows.append(("CPU code", "built into libggml (one instruction set, fixed when it was compiled)"))
    feats = " ".join(ll.get("cpu_features") or []) or "none reported"
    rows.append(("CPU features", f"{feats}; repacked Q4_0/IQ4_NL kernels {'yes' if ll.get('repack') else 'no'}; "
                                 f"AMX {'yes' if ll.get('amx') else 'no'}"))
    gpu = ll.get("gpu_backends") or []
    broken = set(ll.get("gpu_backends_not_loaded") or [])
    gpu_text = ", ".join(f"{b} (not loaded)" if b in broken else b for b in gpu) or "none (CPU-only build)"
    rows.append(("GPU backends", gpu_text))
    offload = [d for d in ll.get("devices") or [] if d.get("type") in ("gpu", "igpu")]
    for d in offload:
        rows.append(("GPU device", f"{d['name']} {d['description']} ({human_bytes(d['memory_free'])} free "
                                   f"of {human_bytes(d['memory_total'])})"))
    rows.append(("GPU offload", "yes" if ll.get("gpu_offload") and offload else "no"))
    return rows


def build_hardware(settings: Settings, gpus: str | None, ram: str | None, *, measure: bool = True) -> Hardware:
    """The machine to plan for: this one, or the one --gpus/--ram describe."""
    if gpus is not None or ram is not None:
        given_gpus = parse_gpus(gpus) if gpus else []
        ram_bytes = parse_size(ram) if ram else hardware.available_memory()[1]
        bw = hardware.measure_bandwidth() if measure and not ram else None
        return Hardware(ram_bytes, given_gpus, bw, origin="given")
    return this_machine(measure)


def _models(ctx: click.Context, name: str | None) -> list[tuple[CatalogModel, str]]:
    return models_to_plan(services(ctx).store, name)


def _speed(plan: ModelPlan) -> str:
    opt = plan.recommended
    if opt is None or opt.tokens_per_second is None:
        return "-"
    return f"~{opt.tokens_per_second:.0f} tok/s" if opt.tokens_per_second >= 10 else f"~{opt.tokens_per_second:.1f} tok/s"


@click.command("plan")
@click.argument("model", required=False)
@click.option("--ctx", "ctx_len", type=int, help="Context length per sequence to plan for.")
@click.option("--slots", type=int, default=1, show_default=True, help="Concurrent sequences.")
@click.option("--gpus", help="Hypothetical GPUs, e.g. 4x24GB, 8xH200, 2x80GB.")
@click.option("--ram", help="Hypothetical RAM for the model, e.g. 64GB.")
@click.option("--nodes", type=int, default=1, show_default=True,
              help="Machines like this one (or --gpus) in a Ray cluster: vLLM pipeline stages.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema in docs/planner.md).")
@click.pass_context
def plan(ctx: click.Context, model: str | None, ctx_len: int | None, slots: int, gpus: str | None,
         ram: str | None, nodes: int, as_json: bool) -> None:
    """Which models fit here (or on --gpus/--ram), at which quantization, context and speed."""
    settings: Settings = ctx.find_root().obj
    if ctx_len is not None and ctx_len < 256:
        raise click.BadParameter("must be at least 256 tokens", param_hint="--ctx")
    if slots < 1:
        raise click.BadParameter("must be at least 1", param_hint="--slots")
    if nodes < 1:
        raise click.BadParameter("must be at least 1", param_hint="--nodes")
    hw = build_hardware(settings, gpus, ram)
    plans = plan_models(_models(ctx, model), hw, ctx_len, slots, nodes)
    if as_json:
        echo_json({"schema": SCHEMA_VERSION, "hardware": hardware_dict(hw),
                   "models": [p.to_dict() for p in plans]})
        return
    click.echo(_hardware_line(hw))
    rows = []
    for p in plans:
        r = p.recommended
        rows.append((
            p.model + (" *" if p.source == "store" else ""),
            p.verdict,
            r.quantization if r else "-",
            r.ctx if r else "-",
            human_bytes(r.memory) if r else "-",
            _speed(p),
            p.best_quality if r and r.engine == "llama.cpp" and p.best_quality != r.quantization else "",
        ))
    click.echo(table(["Model", "Verdict", "Quant", "Context", "Memory", "Speed (estimate)", "Also fits"], rows))
    for p in plans:
        if p.vllm is not None:
            click.echo(f"\n{p.model}: vLLM {p.vllm.detail['layout']} at {p.vllm.quantization}, "
                       f"{human_bytes(p.vllm.detail['weights_per_gpu'])} weights per GPU, room for "
                       f"~{p.vllm.detail['kv_tokens_capacity']:,} tokens of KV cache\n  {p.vllm.detail['command']}")
            if p.vllm.detail.get("bendi"):
                click.echo(f"  bendi: {p.vllm.detail['bendi']} (after `bendi cluster head` and "
                           f"`bendi cluster join` on the other {nodes - 1} node{'s' if nodes > 2 else ''})")
            if p.vllm_note:
                click.echo(f"  note: {p.vllm_note}")
        elif p.vllm_note and hw.discrete_gpus and model:
            click.echo(f"\n{p.model}: no vLLM deployment: {p.vllm_note}")
        for note in p.notes:
            click.echo(f"{p.model}: {note}")
    click.echo("\nSpeeds are rough estimates: bytes read per token (weights + a full KV cache) / memory "
               "bandwidth (a one-thread copy on CPU, a datasheet figure on GPU)."
               + ("  * = installed model, planned from its GGUF header." if any(p.source == "store" for p in plans) else ""))


def _hardware_line(hw: Hardware) -> str:
    what = "this machine" if hw.origin == "detected" else "the described machine"
    ram = f"{human_bytes(hw.ram)} RAM {'available' if hw.origin == 'detected' else ''}".strip()
    groups: dict[str, int] = {}
    for g in hw.gpus:
        key = f"{g.name} ({human_bytes(g.memory)}{' unified' if g.unified else ''})"
        groups[key] = groups.get(key, 0) + 1
    gpus = ", ".join(f"{n} x {k}" for k, n in groups.items()) or "no GPU"
    if hw.gpus and not hw.gpu_offload:
        gpus += " (this llama.cpp build cannot offload)"
    bw = f", CPU memory bandwidth {human_bytes(hw.cpu_bandwidth)}/s measured" if hw.cpu_bandwidth else ""
    return f"Planning for {what}: {ram}, {gpus}{bw}; a {int(100 * 0.1)}% safety margin is kept.\n"


def register(group: click.Group) -> None:
    group.add_command(doctor)
    group.add_command(plan)
