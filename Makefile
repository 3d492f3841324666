# Each target creates the virtual environment with the pinned set when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo bench test test-slow lint format clean cross-cpu

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## The main job on the embedded default (no files needed): train the small U-Net on synthetic
## data (kept in runs/default-float), QAT, export every format, parity gate, bundle.
demo: $(STAMP)
	$(PY) -m optimize.quantize --out runs/bundle --overwrite

## Benchmark the demo's bundle (make demo first): report in runs/bundle/report.
bench: $(STAMP)
	$(PY) -m benchmarks --bundle runs/bundle --overwrite

## The bundle's models and runtime.verify on emulated CPUs (x86 AVX2, ARM Neoverse-N1 and
## Cortex-A72) against this machine (make demo first). Builds qemu-user, an arm64 root and the
## aarch64 wheels once (apt-get and pip; cached in ~/.cache/unet-edge/cross-cpu); writes
## cross_cpu.json and cross_cpu.md into the bundle's report folder.
CROSS_CPU_BUNDLE ?= runs/bundle
cross-cpu: $(STAMP)
	$(PY) -m benchmarks.crosscpu $(CROSS_CPU_BUNDLE)

## Lint and the suite but its slow end-to-end runs (a few minutes on 2 cores).
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -m "not slow"

## The slow part: real training, conversion and whole-chain runs (CI runs it after `make test`).
test-slow: $(STAMP)
	$(PY) -m pytest -m slow

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
