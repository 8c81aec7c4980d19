"""The llama.cpp build: what it reports, the AMX guard, doctor's advice, the build script, placement."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

from bendi.cli.main import cli
from bendi.planner import hardware
from bendi.planner.catalog import load_catalog
from bendi.planner.machine import Gpu, Hardware
from bendi.planner.placement import Placement, explicit_placement, gpu_shares, placement_for
from bendi.planner.plan import plan_model
from bendi.runtime.llama import build as buildinfo

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "planner"
GB = 1_000_000_000

# llama_print_system_info() of three builds, as llama.cpp prints them
PORTABLE_HASWELL = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
                    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
NATIVE_SAPPHIRE_RAPIDS = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
                          "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | "
                          "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
CUDA_BUILD = ("CUDA : ARCHS = 890,900 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | "
              "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
              "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")


def build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_llama", ROOT / "scripts" / "build_llama.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_llama"] = module
    spec.loader.exec_module(module)
    return module


# -- what llama.cpp reports ----------------------------------------------------------------------

def test_parse_system_info_by_backend() -> None:
    sections = buildinfo.parse_system_info(CUDA_BUILD)
    assert sections["CUDA"]["ARCHS"] == "890,900" and sections["CPU"]["AVX512"] == "1"
    assert buildinfo.cpu_features(CUDA_BUILD) == ["SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2", "AVX512"]
    assert buildinfo.cpu_features(PORTABLE_HASWELL)[-1] == "BMI2"
    assert not buildinfo.reports_amx(PORTABLE_HASWELL) and not buildinfo.reports_amx(CUDA_BUILD)
    assert buildinfo.reports_amx(NATIVE_SAPPHIRE_RAPIDS)
    assert buildinfo.parse_system_info("") == {}


def test_amx_guard_decides_from_system_info() -> None:
    keep = buildinfo.amx_guard(PORTABLE_HASWELL, allow_amx=False)
    assert keep.use_extra_bufts and keep.message is None  # the repacked kernels stay on
    off = buildinfo.amx_guard(NATIVE_SAPPHIRE_RAPIDS, allow_amx=False)
    assert not off.use_extra_bufts
    assert off.message and "20824" in off.message and "BENDI_AMX=1" in off.message
    on = buildinfo.amx_guard(NATIVE_SAPPHIRE_RAPIDS, allow_amx=True)
    assert on.use_extra_bufts and on.message and "BENDI_AMX" in on.message


def test_amx_guard_sets_model_params_and_logs_once(caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    monkeypatch.setattr(buildinfo, "system_info", lambda: NATIVE_SAPPHIRE_RAPIDS)
    buildinfo._say_once.cache_clear()
    for _ in range(3):
        params = llama_cpp.llama_model_default_params()
        assert params.use_extra_bufts
        buildinfo.apply_amx_guard(params, allow_amx=False)
        assert not params.use_extra_bufts
    assert sum("AMX" in r.getMessage() for r in caplog.records) == 1
    monkeypatch.setattr(buildinfo, "system_info", lambda: PORTABLE_HASWELL)
    params = llama_cpp.llama_model_default_params()
    buildinfo.apply_amx_guard(params, allow_amx=False)
    assert params.use_extra_bufts


def test_variant_names() -> None:
    assert buildinfo.variant_of("/x/llama_cpp/lib/libggml-cpu-haswell.so") == "haswell"
    assert buildinfo.variant_of("libggml-cpu-armv8.2_1.so") == "armv8.2_1"
    assert buildinfo.variant_of("/x/libggml-cpu.so") is None and buildinfo.variant_of("libggml-cuda.so") is None


def test_installed_build_is_bendis_portable_build() -> None:
    """`make install` put bendi's build here, not a wheel pip compiled for some CPU."""
    build = buildinfo.engine_build()
    assert build.installed and build.origin == "bendi", build.version
    assert build.cpu_variant in build.cpu_variants_available
    assert "sapphirerapids" not in build.cpu_variants_available  # the AMX variant is not built
    assert not build.amx and build.repack
    assert "CPU" in build.backends
    assert any(d["type"] == "cpu" for d in build.devices)
    # the CPU backend runs from the variant module ggml picked, and only from that one
    loaded = [m for m in buildinfo.loaded_modules() if buildinfo.variant_of(m)]
    assert [buildinfo.variant_of(m) for m in loaded] == [build.cpu_variant]


# -- doctor ---------------------------------------------------------------------------------------

def _tools(**outputs: str) -> list[hardware.ToolReport]:
    def runner(argv: list[str]) -> str | None:
        return outputs.get(argv[0].replace("-", "_"))

    return hardware.detect_accelerators(runner)


def test_doctor_advises_rebuilding_for_a_gpu_the_build_cannot_use() -> None:
    tools = _tools(nvidia_smi=(FIXTURES / "nvidia_smi.csv").read_text(),
                   npu_smi=(FIXTURES / "npu_smi.txt").read_text())
    gpus = {t.tool: [d.name for d in t.devices] for t in tools if t.devices}
    cpu_only = buildinfo.EngineBuild(installed=True, backends=["CPU"])
    advice = buildinfo.build_advice(cpu_only, gpus, "make -C /src/bendi install GPU={gpu}")
    by_backend = {a.backend: a for a in advice}
    assert set(by_backend) == {"CUDA", "CANN"}
    cuda = by_backend["CUDA"]
    assert cuda.command.startswith("make -C /src/bendi install GPU=cuda") and "nvcc" in cuda.command
    assert "NVIDIA H200" in cuda.problem and "no CUDA backend" in cuda.problem
    assert by_backend["CANN"].command.startswith("make -C /src/bendi install GPU=cann")

    with_cuda = buildinfo.EngineBuild(installed=True, backends=["CUDA", "CPU"], gpu_backends=["CUDA"])
    assert [a.backend for a in buildinfo.build_advice(with_cuda, gpus, "make install GPU={gpu}")] == ["CANN"]
    no_driver = buildinfo.EngineBuild(installed=True, backends=["CPU"], gpu_backends=["CUDA"],
                                     gpu_backends_not_loaded=["CUDA"])
    [cuda] = [a for a in buildinfo.build_advice(no_driver, gpus, "make install GPU={gpu}") if a.backend == "CUDA"]
    assert "did not load" in cuda.problem and "driver" in cuda.problem
    assert buildinfo.build_advice(cpu_only, {}, "make install GPU={gpu}") == []


def test_doctor_shows_the_engine_build() -> None:
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    build = buildinfo.engine_build()
    assert f"{build.cpu_variant} variant, chosen for this CPU" in result.stdout
    assert "GPU backends" in result.stdout and "repacked Q4_0/IQ4_NL kernels yes" in result.stdout
    data = json.loads(CliRunner().invoke(cli, ["doctor", "--json"]).stdout)
    ll = data["llama_cpp"]
    assert ll["cpu_variant"] == build.cpu_variant and ll["cpu_features"] == build.cpu_features
    assert ll["gpu_backends"] == build.gpu_backends and ll["amx"] is False
    assert isinstance(data["engine_advice"], list)
    # without a GPU on this machine there is nothing to advise; with one, the advice names it
    machine_gpus = [d for t in hardware.detect_accelerators() for d in t.devices]
    if not machine_gpus:
        assert data["engine_advice"] == []


# -- the build script -----------------------------------------------------------------------------

def test_build_key_changes_with_what_changes_the_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    b = build_script()
    monkeypatch.setattr(b, "dispatched", lambda: True)
    portable = b.build_key(b.cmake_args("cpu", None, False), False)
    assert "-DGGML_CPU_ALL_VARIANTS=ON" in portable["cmake_args"] and "-DGGML_NATIVE=OFF" in portable["cmake_args"]
    assert "cpu" not in portable  # one wheel for every CPU: the CPU is not part of the key
    assert "sapphirerapids" in portable["dropped_variants"]
    with_amx = b.build_key(b.cmake_args("cpu", None, True), True)
    assert b.key_hash(with_amx) != b.key_hash(portable)
    monkeypatch.setattr(b, "find_nvcc", lambda: "/opt/cuda/bin/nvcc")
    monkeypatch.setattr(b, "has_cublas", lambda nvcc: True)
    cuda = b.build_key(b.cmake_args("cuda", "89;90", False), False)
    assert "-DGGML_CUDA=ON" in cuda["cmake_args"] and "-DCMAKE_CUDA_ARCHITECTURES=89;90" in cuda["cmake_args"]
    assert b.key_hash(cuda) != b.key_hash(portable)
    # where flags are native (macOS), the CPU is part of the key: a wheel never moves to another CPU
    monkeypatch.setattr(b, "dispatched", lambda: False)
    monkeypatch.setattr(b, "cpu_identity", lambda: "Apple M2")
    m2 = b.build_key(b.cmake_args("cpu", None, False), False)
    monkeypatch.setattr(b, "cpu_identity", lambda: "Apple M4")
    assert b.key_hash(b.build_key(b.cmake_args("cpu", None, False), False)) != b.key_hash(m2)


def test_auto_builds_cuda_only_with_nvcc_and_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    b = build_script()
    monkeypatch.setattr(b, "find_nvcc", lambda: "/usr/local/cuda/bin/nvcc")
    monkeypatch.setattr(b, "nvidia_compute_caps", lambda: [])
    assert b.choose_gpu("auto") == "cpu"  # this machine: the toolkit but no GPU
    monkeypatch.setattr(b, "nvidia_compute_caps", lambda: ["90"])
    assert b.choose_gpu("auto") == "cuda" and b.choose_gpu("cpu") == "cpu"
    monkeypatch.setattr(b, "find_nvcc", lambda: None)
    assert b.choose_gpu("auto") == "cpu"


def test_patched_source_leaves_amx_out(tmp_path: Path) -> None:
    """The patches bendi applies to llama-cpp-python's source, on the real source."""
    b = build_script()
    sdist = Path.home() / ".cache" / "bendi" / "llama-wheels" / "sdist" / b.SDIST_NAME
    if not sdist.is_file():
        pytest.skip(f"{sdist} is kept by `make install`; not here")
    wanted = ("vendor/llama.cpp/ggml/src/CMakeLists.txt", "llama_cpp/llama_cpp.py", "llama_cpp/__init__.py")
    with tarfile.open(sdist) as tar:
        for member in tar:
            if member.name.split("/", 1)[-1] in wanted:
                tar.extract(member, tmp_path, filter="data")
    src = next(tmp_path.iterdir())
    kept = b.patch_source(src, amx=False)
    assert kept == ["x64", "haswell", "skylakex", "cascadelake", "zen4", "alderlake"]
    cmake = (src / wanted[0]).read_text()
    assert "sapphirerapids" not in cmake and "AMX_TILE AMX_INT8)" not in cmake


def test_packaging_versions_the_wheel_and_adds_the_loader_once(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import base64
    import hashlib
    import zipfile

    b = build_script()
    monkeypatch.setattr(b, "dispatched", lambda: True)
    raw = tmp_path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    info = "llama_cpp_python-0.3.36.dist-info"
    with zipfile.ZipFile(raw, "w") as z:
        z.writestr("llama_cpp/llama_cpp.py", f"import ctypes\n{b.LOADER_ANCHOR}\n")
        z.writestr("llama_cpp/__init__.py", 'from .llama_cpp import *\n__version__ = "0.3.36"\n')
        z.writestr("llama_cpp/lib/libggml-cpu-haswell.so", b"\x7fELF")
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: 0.3.36\n")
        z.writestr(f"{info}/RECORD", "stale\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = b.package_wheel(raw, "cpu.abc", tmp_path / "a")
    again = b.package_wheel(first, "cpu.def", tmp_path / "b")  # repackaging replaces the patch
    assert again.name == "llama_cpp_python-0.3.36+bendi.cpu.def-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(again) as z:
        new_info = "llama_cpp_python-0.3.36+bendi.cpu.def.dist-info"
        assert z.read("llama_cpp/llama_cpp.py").decode().count(b.PATCH_MARK) == 1
        assert '__version__ = "0.3.36+bendi.cpu.def"' in z.read("llama_cpp/__init__.py").decode()
        assert "Version: 0.3.36+bendi.cpu.def" in z.read(f"{new_info}/METADATA").decode()
        assert not any(n.startswith(info) for n in z.namelist())
        for line in z.read(f"{new_info}/RECORD").decode().splitlines():
            name, digest, size = line.split(",")
            if digest:
                data = z.read(name)
                want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert digest == f"sha256={want}" and int(size) == len(data)


def _fake_compiled_wheel(path: Path, variants: list[str], anchor: str) -> Path:
    import zipfile

    path.mkdir(parents=True)
    wheel = path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    info = "llama_cpp_python-0.3.36.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("llama_cpp/llama_cpp.py", f"import ctypes\n{anchor}\n")
        z.writestr("llama_cpp/__init__.py", '__version__ = "0.3.36"\n')
        z.writestr("llama_cpp/lib/libggml-base.so", b"\x7fELF")
        for v in variants:
            z.writestr(f"llama_cpp/lib/libggml-cpu-{v}.so", b"\x7fELF")
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: 0.3.36\n")
        z.writestr(f"{info}/RECORD", "stale\n")
    return wheel


def test_a_compile_with_more_variants_is_reused_without_recompiling(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A machine that compiled a longer variant list packages the current one from it in seconds."""
    import zipfile

    b = build_script()
    monkeypatch.setattr(b, "dispatched", lambda: True)
    key = b.build_key(b.cmake_args("cpu", None, False), False)
    every = ["x64", "sse42", "sandybridge", "haswell", "skylakex", "cascadelake", "icelake", "zen4", "alderlake"]
    wanted = [v for v in every if v not in key["dropped_variants"]]
    compiled = tmp_path / "cache" / "compiled"
    for name, dropped, flags in (("cpu.larger", ["sapphirerapids"], key["cmake_args"]),
                                 ("cpu.other-flags", ["sapphirerapids"], [*key["cmake_args"], "-DGGML_CUDA=ON"])):
        entry = compiled / name
        _fake_compiled_wheel(entry, [v for v in every if v not in dropped], b.LOADER_ANCHOR)
        (entry / "build-info.json").write_text(json.dumps({**key, "cmake_args": flags, "dropped_variants": dropped,
                                                           "x86_variants": every}))
    raw, drop = b.reusable_compile(compiled, key)
    assert raw.parent.name == "cpu.larger" and drop == set(key["dropped_variants"]) - {"sapphirerapids"}
    # a compile that left out a variant the key wants is no use (here: the AMX variant)
    assert b.reusable_compile(compiled, b.build_key(b.cmake_args("cpu", None, True), True)) is None

    def no_compiling(*args: object) -> None:
        raise AssertionError("compiled although a usable build was cached")

    monkeypatch.setattr(b, "compile_wheel", no_compiling)
    assert b.main(["--gpu", "cpu", "--cache", str(tmp_path / "cache"), "--no-install"]) == 0
    wheel = Path(capsys.readouterr().out.strip())
    with zipfile.ZipFile(wheel) as z:
        modules = sorted(v for n in z.namelist() if (v := b.variant_module(n)))
    assert modules == sorted(wanted)
    info = json.loads((wheel.parent / "build-info.json").read_text())
    assert info["x86_variants"] == wanted and info["packaged_from"] == "cpu.larger"


def test_missing_build_tools_are_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    b = build_script()
    monkeypatch.setattr(b.shutil, "which", lambda cmd: None if cmd in ("cmake", "apt-get") else f"/usr/bin/{cmd}")
    with pytest.raises(SystemExit):
        b.ensure_build_tools()
    err = capsys.readouterr().err
    assert "needs cmake" in err and "apt-get install cmake" in err


def test_installed_package_loads_backends_from_its_own_directory() -> None:
    import llama_cpp.llama_cpp as raw

    b = build_script()
    source = Path(raw.__file__).read_text()
    assert source.count(b.PATCH_MARK) == 1
    # any user of the package gets the backends: a fresh interpreter, llama_cpp alone, no bendi
    code = ("import llama_cpp; info = llama_cpp.llama_print_system_info().decode(); "
            "assert 'CPU :' in info and 'REPACK = 1' in info, info; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "ok", proc.stderr
    assert proc.stderr == ""  # loading the modules is quiet


# -- GPU placement: what `bendi plan` says is what the engine gets ----------------------------------

def _catalog(name: str):  # noqa: ANN202
    return next(m for m in load_catalog() if m.name == name)


def test_full_offload_on_one_gpu() -> None:
    model = _catalog("deepseek-r1:7b")
    gpus = [Gpu("NVIDIA GeForce RTX 4090", 24 * GB, 1.0e12)]
    plan = plan_model(model, Hardware(64 * GB, gpus))
    assert plan.recommended is not None and "fully on GPU" in plan.verdict
    placement = placement_for(plan.recommended, gpus, model.shape.layers)
    assert placement == Placement("gpu", model.shape.layers + 1, (), model.shape.layers)
    assert placement.describe() == "29/29 layers on GPU"


def test_partial_offload_gets_the_planned_layer_count() -> None:
    model = _catalog("deepseek-r1:70b")
    gpus = [Gpu("NVIDIA GeForce RTX 4090", 24 * GB, 1.0e12)]
    plan = plan_model(model, Hardware(128 * GB, gpus, 50e9))
    assert plan.recommended is not None and plan.recommended.target == "split"
    planned = int(re.search(r"split, (\d+) layers on GPU", plan.verdict).group(1))  # type: ignore[union-attr]
    placement = placement_for(plan.recommended, gpus, model.shape.layers)
    assert placement.target == "split" and placement.gpu_layers == planned
    assert 0 < planned < model.shape.layers


def test_several_gpus_share_layers_by_memory() -> None:
    model = _catalog("deepseek-r1:14b")
    gpus = [Gpu("NVIDIA GeForce RTX 4090", 24 * GB, 1.0e12), Gpu("12 GB GPU", 12 * GB, 0.5e12)]
    plan = plan_model(model, Hardware(64 * GB, gpus))
    assert plan.llama_cpp is not None and plan.llama_cpp.target == "gpu"
    placement = placement_for(plan.llama_cpp, gpus, model.shape.layers)
    assert placement.gpu_layers == model.shape.layers + 1
    assert placement.tensor_split == pytest.approx((2 / 3, 1 / 3), abs=1e-3)
    assert "over 2 GPUs" in placement.describe()


def test_no_gpu_keeps_everything_on_cpu() -> None:
    model = _catalog("deepseek-r1:1.5b")
    plan = plan_model(model, Hardware(16 * GB, []))
    assert plan.recommended is not None and plan.recommended.target == "cpu"
    assert placement_for(plan.recommended, [], model.shape.layers) == Placement("cpu", 0, (), model.shape.layers)


def test_explicit_gpu_layers() -> None:
    gpus = [Gpu("a", 24 * GB), Gpu("b", 24 * GB)]
    assert explicit_placement(-1, gpus, 28) == Placement("gpu", 29, (0.5, 0.5), 28)
    assert explicit_placement(10, gpus, 28).target == "split"
    assert explicit_placement(99, gpus, 28).gpu_layers == 29
    assert explicit_placement(0, gpus, 28) == Placement("cpu", 0, (), 28)
    assert explicit_placement(-1, [], 28).gpu_layers == 0
    assert gpu_shares([Gpu("a", 10 * GB)]) == ()


def test_engine_placement_follows_the_plan() -> None:
    """plan_placement is what the engine calls at load, with the GPUs llama.cpp reports."""
    from bendi.planner.placement import plan_placement

    model = _catalog("deepseek-r1:70b")
    ram = 128 * GB
    one = [Gpu("NVIDIA GeForce RTX 4090", 24 * GB, 1.0e12)]
    plan = plan_model(model, Hardware(ram, one), ctx=8192)
    assert plan.llama_cpp is not None
    placed = plan_placement(model, one, ram, plan.llama_cpp.ctx, 1)
    assert placed == placement_for(plan.llama_cpp, one, model.shape.layers)
    assert placed.target == "split" and placed.gpu_layers == plan.llama_cpp.gpu_layers
    big = [Gpu("NVIDIA H200", 141 * GB, 4.8e12)] * 2
    assert plan_placement(model, big, ram, 8192, 1).target == "gpu"
    assert plan_placement(model, [], ram, 8192, 1).gpu_layers == 0
    assert plan_placement(model, big, ram, 8192, 1, gpu_layers=0).gpu_layers == 0  # BENDI_GPU_LAYERS=0
    # nothing fits (a forced load): as much as the plan thinks fits on the GPU, not all of it
    tiny = [Gpu("8 GB GPU", 8 * GB)]
    forced = plan_placement(model, tiny, 16 * GB, 8192, 1)
    assert forced.target == "split" and forced.gpu_layers < model.shape.layers


def test_placement_reaches_llama_model_params() -> None:
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    keep = buildinfo.apply_placement(params, Placement("gpu", 29, (0.6667, 0.3333), 28))
    assert keep is not None and params.n_gpu_layers == 29
    assert params.split_mode == llama_cpp.LLAMA_SPLIT_MODE_LAYER
    assert [params.tensor_split[i] for i in range(2)] == pytest.approx([0.6667, 0.3333])
    params = llama_cpp.llama_model_default_params()
    assert buildinfo.apply_placement(params, Placement("cpu", 0)) is None and params.n_gpu_layers == 0


def test_engine_places_the_bundled_model_as_planned(bundled_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real engine: with no GPU all on the CPU; with GPUs (as llama.cpp would report them) the
    plan's placement goes into llama_model_params. llama.cpp here has no GPU device, so it runs the
    model on the CPU whatever n_gpu_layers says, and the answer still comes."""
    from bendi.runtime.engine import LoadOptions
    from bendi.runtime.llama.model import LlamaModel
    from bendi.runtime.types import ChatRequest, Done, SamplingParams

    req = ChatRequest(model="m", messages=[{"role": "user", "content": "Hi"}],
                      sampling=SamplingParams(temperature=0), max_tokens=4)
    with LlamaModel(bundled_path, LoadOptions(ctx=512, slots=1)) as model:
        assert model.placement.target == "cpu" and model.placement.gpu_layers == 0
    seen: list[int] = []
    real = buildinfo.apply_placement
    monkeypatch.setattr(buildinfo, "planning_gpus", lambda: [Gpu("NVIDIA H200", 141 * GB, 4.8e12),
                                                             Gpu("NVIDIA H200", 141 * GB, 4.8e12)])
    monkeypatch.setattr("bendi.runtime.llama.model.apply_placement",
                        lambda mp, p: (real(mp, p), seen.append(mp.n_gpu_layers))[0])
    with LlamaModel(bundled_path, LoadOptions(ctx=512, slots=1)) as model:
        layers = model.placement.n_layers
        assert model.placement == Placement("gpu", layers + 1, (0.5, 0.5), layers) and layers == 30
        assert seen == [layers + 1]
        done = [e for e in model.generate(req) if isinstance(e, Done)][0]
        assert done.usage.completion_tokens == 4
    with LlamaModel(bundled_path, LoadOptions(ctx=512, slots=1, gpu_layers=0)) as model:
        assert model.placement.gpu_layers == 0  # BENDI_GPU_LAYERS=0 keeps it on the CPU


def test_guard_counts_gpu_memory(bendi_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that does not fit in RAM but fits on the GPUs is not refused."""
    from bendi.errors import InsufficientMemory
    from bendi.planner.guard import fit_check
    from bendi.store import ModelStore
    from bendi.store.bundled import register_bundled

    store = ModelStore(bendi_home / "models")
    register_bundled(store)
    record = store.get("smollm2:135m")
    with pytest.raises(InsufficientMemory):
        fit_check(record, 2048, 1, memory_limit="100MB", gpus=[])
    fit_check(record, 2048, 1, memory_limit="100MB", gpus=[Gpu("NVIDIA GeForce RTX 4090", 24 * GB)])
    with pytest.raises(InsufficientMemory):
        fit_check(record, 2048, 1, memory_limit="100MB", gpus=[Gpu("tiny", 50_000_000)])
