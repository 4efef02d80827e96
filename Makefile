# Set-up and entry points. Everything a fresh machine needs is installed here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of this version lies on local disk on the team's machines; a GPU user overrides it,
# for example: make setup TORCH_SPEC="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint test-slow bench clean gpu-wheels gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: setup
	$(BIN)/python -m benchmarks.demo

test: setup lint
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

test-slow: setup
	$(BIN)/python -m pytest -q --runslow

bench: setup
	$(BIN)/enerv-bench data/bunny_320x180_48f.mkv -o reports/bunny --quick

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# The GPU check runs with the GPU machine's own python3 and PyTorch (no venv is built there); it
# installs what that machine lacks from wheels/, which gpu-wheels fills here, where PyPI is reached
# (with the first 60 frames of the 720p bunny, since ../shared does not travel).
# --no-deps keeps pip away from torch, so every dependency that can be missing is named here.
GPU_WHEELS ?= 'constriction>=0.4,<0.6' ffmpeg-python future imageio-ffmpeg pytorch-msssim bjontegaard pyyaml tqdm \
	pytest pytest-timeout iniconfig pluggy packaging pygments
GPU_CHECK_ARGS ?=

gpu-wheels: setup
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d wheels/ $(GPU_WHEELS)
	$(BIN)/python -m benchmarks.gpu_check --prepare-clip

gpu-check:
	$(PYTHON) -m benchmarks.gpu_check $(GPU_CHECK_ARGS)
