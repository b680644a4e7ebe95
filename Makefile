# One entry per job; every target sets up what is missing first (idempotent, ~1 s when nothing to do).
VENV ?= .venv
PY   := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup setup-env setup-system bench test test-quick perf slurm-up slurm-down

setup: setup-system setup-env

setup-system:            ## Debian slurm + munge + slurmdbd/mariadb for the local test cluster (root only)
	@bash scripts/setup_system.sh

setup-env:               ## .venv with torch, mmcv (cached CPU-ops wheel), mmdet, mmseg, detectron2, timm, submitit, ...
	@bash scripts/setup_env.sh

bench: setup             ## the main job: python benchmarks/run_all.py (toy suite on CPU by default)
	$(PY) benchmarks/run_all.py $(ARGS)

test: setup              ## the whole test suite that CI runs (everything but `gpu`)
	$(PY) -m pytest $(PYTEST_ARGS)

test-quick: setup-env    ## unit tests only: no slow runs, no SLURM cluster
	$(PY) -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

perf: setup-env          ## CPU perf ratios (A²MIM step vs bare backbone, loader vs torchvision)
	$(PY) -m benchmarks.perf.pretrain_step $(ARGS)

slurm-up:                ## start the local single-node test cluster (state under $SLURM_TEST_BASE or /tmp/a2mim-slurm)
	@bash slurm/cluster/start.sh $${SLURM_TEST_BASE:-/tmp/a2mim-slurm}

slurm-down:              ## stop it (by PID)
	@bash slurm/cluster/stop.sh $${SLURM_TEST_BASE:-/tmp/a2mim-slurm}
