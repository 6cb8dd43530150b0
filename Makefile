# digits: `make demo` runs the whole job (train → export with parity → classify samples/), `make test` the tests.
# Each target installs what it needs into .venv first. MNIST comes from $(DIGITS_DATA_DIR), else ./data
# (downloaded there when absent).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= dev,ray
TRAIN_FLAGS ?=
EXPORT_FLAGS ?=
BENCH_FLAGS ?=
NPROC ?= 1

.PHONY: install train export classify demo test test-fast lint bench gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

train: $(STAMP)
ifeq ($(NPROC),1)
	$(BIN)/digits-train $(TRAIN_FLAGS)
else
	$(BIN)/torchrun --standalone --nproc-per-node $(NPROC) -m trainer $(TRAIN_FLAGS)
endif

export: $(STAMP)
	$(BIN)/digits-export $(EXPORT_FLAGS)

classify: $(STAMP)
	$(BIN)/digits-infer samples --backend onnx -o predictions.csv; test $$? -le 1
	$(BIN)/python -m infer.score predictions.csv samples/labels.csv
	$(BIN)/digits-report predictions.csv --labels samples/labels.csv -o report.html

demo: train export classify

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=20

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_FLAGS)

gpu-check: $(STAMP)
	$(BIN)/python -m bench.gpu_check

clean:
	rm -rf checkpoints artifacts predictions.csv predictions.csv.partial report.html bench/.cache bench/results
