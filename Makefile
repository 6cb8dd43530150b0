# digits: `make demo` runs the whole job (train → export with parity → classify samples/), `make test` the tests.
# Each target installs what it needs into .venv first. MNIST comes from $(DIGITS_DATA_DIR), else ./data
# (downloaded there when absent).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRAIN_FLAGS ?=
EXPORT_FLAGS ?=
BENCH_FLAGS ?=

.PHONY: install train export classify demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/digits-train $(TRAIN_FLAGS)

export: $(STAMP)
	$(BIN)/digits-export $(EXPORT_FLAGS)

classify: $(STAMP)
	$(BIN)/digits-infer samples --backend onnx -o predictions.csv; test $$? -le 1
	$(BIN)/python -m infer.score predictions.csv samples/labels.csv

demo: train export classify

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_FLAGS)

clean:
	rm -rf checkpoints artifacts predictions.csv predictions.csv.partial bench/.cache bench/results
