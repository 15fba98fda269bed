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

.PHONY: install test test-slow test-all demo demo-text bench reproduce-table2 reproduce-sdp-glue sweep report lint clean gpu-check wheelhouse

$(PY):
	python3 -m venv $(VENV)
	$(BIN)/pip install -q uv==0.13.8

# Re-runs only when the pins or the package metadata change.
$(STAMP): $(PY) pyproject.toml setup.py constraints.txt
	VIRTUAL_ENV=$(VENV) $(BIN)/uv pip install -q --compile-bytecode -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The tests (`make test`): everything but the `slow` end-to-end tests (DDP with 2 gloo processes,
# kill/resume, the installed wheel, the Optuna search, reproduce-table2); `make test-slow` runs
# those, `make test-all` both. CI runs `make test` and then `make test-slow`.
test: install
	WANDB_MODE=offline $(PY) -m pytest -q -m "not slow" $(ARGS)

test-slow: install
	WANDB_MODE=offline $(PY) -m pytest -q -m slow $(ARGS)

test-all: install
	WANDB_MODE=offline $(PY) -m pytest -q $(ARGS)

# The main job on the bundled offline data: TGP against magnitude, ce_grad, SNIP and TGP's
# layer-shuffle sanity check at 90% sparsity over 3 seeds (one sweep folder), then the report
# with 95% intervals and paired differences to TGP.
demo: install
	$(PY) -m tgp.run -m experiment=demo method=tgp,ce_grad,magnitude,snip seed=0,1,2 $(ARGS)
	$(PY) -m tgp.run -m experiment=demo method=tgp pruning.sanity=layer_shuffle seed=0,1,2 $(ARGS)
	$(PY) -m tgp.report outputs/sweeps/demo --reference tgp

# Text on the same pipeline, offline on a CPU: a tiny BERT on the generated roleswap task (written with its
# tokenizer into $(DEMO_DATA) when missing), SDP against its λ = 0 ablation and one-shot magnitude pruning (CE
# retraining, as SDP's) at 90% sparsity over 3 seeds (one sweep folder under $(LOGS)), then the report with
# 95% intervals and paired differences to SDP. About 3 minutes on a CPU. One thread per process by default: the
# tiny model's small matrices gain nothing from a second one, and on a shared CPU its threads wait on each other
# (measured: a training step 3x slower with 2 threads than with 1 on 2 busy cores).
DEMO_DATA ?= data
LOGS      ?= outputs
demo-text: export OMP_NUM_THREADS ?= 1
demo-text: install
	$(PY) -m tgp.data.text.generated --root $(DEMO_DATA)
	$(PY) -m tgp.run -m experiment=demo_text method=sdp seed=0,1,2 paths.data_dir=$(DEMO_DATA) paths.log_dir=$(LOGS) $(ARGS)
	$(PY) -m tgp.run -m experiment=demo_text method=sdp method.cc_weight=0 seed=0,1,2 paths.data_dir=$(DEMO_DATA) paths.log_dir=$(LOGS) $(ARGS)
	$(PY) -m tgp.run -m experiment=demo_text method=magnitude retrain.kd=false seed=0,1,2 paths.data_dir=$(DEMO_DATA) paths.log_dir=$(LOGS) $(ARGS)
	$(PY) -m tgp.report $(LOGS)/sweeps/demo_text --reference sdp

bench: install
	$(PY) -m tgp.data.text.generated --root $(DEMO_DATA)  # the text recipe's data (demo_text)
	$(PY) -m tgp.bench $(ARGS)

# A small sweep on the offline data: the paper's first sparsity ladder, TGP against magnitude.
sweep: install
	$(PY) -m tgp.run -m experiment=demo sweep=ladder_a method=tgp,magnitude name=demo_sweep $(ARGS)
	$(PY) -m tgp.report outputs/sweeps/demo_sweep

# The paper's Table 2 grid (SMOKE=1: digits, ladder A, seed 0). Jobs, stages and the report go under
# outputs/ (report: outputs/reproduce_table2[_smoke]/), never into the source tree; ARGS="--dry-run" only plans.
reproduce-table2: install
	$(PY) experiments/reproduce_table2.py --smoke $(SMOKE) $(ARGS)

# SDP's Transformer comparison: BERT-base on GLUE, XLM-R base on XGLUE (SMOKE=1: tiny files of every task,
# tiny models, one seed, CPU). Report: outputs/reproduce_sdp_glue[_smoke]/; ARGS="--dry-run" only plans.
reproduce-sdp-glue: install
	$(PY) experiments/reproduce_sdp_glue.py --smoke $(SMOKE) $(ARGS)

# A GPU's first minutes in one command (no network, no `install`: the machine's Python with torch,
# torchvision, lightning and torchmetrics, the rest from wheelhouse/): versions, GPU tests, bench,
# a one-epoch CIFAR-10 job, the Table 2 estimate -> outputs/gpu_check/<device>.json/.md.
# CPU_DRY=1 (or ARGS=--cpu-dry): every part at toy size on the CPU. GPU_PY: the Python to use.
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu-check:
	$(GPU_PY) -m tgp.gpu_check $(if $(filter 1,$(CPU_DRY)),--cpu-dry) $(ARGS)

# The pure-Python wheels gpu-check installs offline (needs a package index; ~2.4 MB in wheelhouse/).
wheelhouse: install
	$(PY) -m tgp.gpu_check.wheelhouse $(ARGS)

report: install  # make report ARGS=outputs/sweeps/<name>
	$(PY) -m tgp.report $(ARGS)

clean:
	rm -rf outputs multirun wandb .pytest_cache
