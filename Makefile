# tgp — every target does its own set-up through the idempotent `install`.
VENV    ?= .venv
BIN     := $(VENV)/bin
PY      := $(BIN)/python
STAMP   := $(VENV)/.installed
ARGS    ?=
SMOKE   ?= 0
export WANDB_SILENT := true
# Never block on a login prompt: without an API key, W&B runs offline.
export WANDB_MODE ?= offline

.PHONY: install test test-all demo bench reproduce-table2 sweep report lint clean

$(PY):
	python3 -m venv $(VENV)
	$(BIN)/pip install -q uv==0.13.8

# Re-runs only when the pins or the package metadata change.
$(STAMP): $(PY) pyproject.toml constraints.txt
	VIRTUAL_ENV=$(VENV) $(BIN)/uv pip install -q --compile-bytecode -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	WANDB_MODE=offline $(PY) -m pytest -q -m "not slow" $(ARGS)

test-all: install
	WANDB_MODE=offline $(PY) -m pytest -q $(ARGS)

demo: install
	$(PY) -m tgp.run $(ARGS)

bench: install
	$(PY) -m tgp.bench $(ARGS)

sweep: install
	$(PY) -m tgp.run -m experiment=smoke method=tgp,magnitude pruning.sparsity=0.5,0.9 $(ARGS)

reproduce-table2: install
	$(PY) experiments/reproduce_table2.py --smoke $(SMOKE) $(ARGS)

report: install
	$(PY) -m tgp.report $(ARGS)

clean:
	rm -rf outputs multirun wandb .pytest_cache
