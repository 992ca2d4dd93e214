# ditjax: everything runs inside a project-local virtual environment (.venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The runtime (demo, sample, bench) and, for tests and lint, the dev extras on top.
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
DEMO_DIR ?= demo_run
CKPT ?=
VAE ?=
# The tests run on this many processes (pytest-xdist), a test file on one process: module
# fixtures are built once, and the multi-process tests of tests/test_multiprocess.py never
# run side by side. (--dist loadgroup would group by xdist_group marks, but pytest-xdist 3.8
# cannot rename pytest 9.2's test ids, so those marks have no effect.)
TEST_WORKERS ?= 2

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test lint format demo sample bench bench-accelerator clean

install: $(DEV_STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests configs benchmarks
	$(BIN)/ruff format --check src tests configs benchmarks

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix src tests configs benchmarks
	$(BIN)/ruff format src tests configs benchmarks

demo: $(STAMP)
	$(BIN)/python -m ditjax.demo --workdir=$(DEMO_DIR)

# `make sample` samples from the demo checkpoint (training it first if needed);
# `make sample CKPT=DIR [VAE=sd-vae:PATH]` samples from any run or converted checkpoint.
sample: $(STAMP)
ifeq ($(CKPT),)
	test -d $(DEMO_DIR)/run/checkpoints || $(MAKE) demo
	$(BIN)/python -m ditjax.sample --checkpoint=$(DEMO_DIR)/run --labels=0,1,2,3,4,5,6,7,8,9 \
		--repeats=4 --cfg_scale=4.0 --steps=100 --upscale=6 --out=$(DEMO_DIR)/sample_grid.png
else
	$(BIN)/python -m ditjax.sample --checkpoint=$(CKPT) $(if $(VAE),--autoencoder=$(VAE)) \
		--cfg_scale=4.0 --sampler=ddpm --steps=250 --out=sample_grid.png
endif

# `make bench`: the benchmark suite on the local devices (a few minutes on a CPU; a 10-step
# guided sampling loop); writes benchmarks/results-<device>.json and .md.
bench: $(STAMP)
	$(BIN)/python -m ditjax.bench --mode=all --sample_steps=10 --repeats=3 --out_dir=benchmarks

# `make bench-accelerator`: DiT-XL/2 and DiT-B/2 at 256 px in bfloat16 on a GPU or TPU host,
# every combination of BATCHES and REMAT (and ATTENTION: empty is JAX's choice; cudnn,xla
# on a GPU compares the two), training and a 50-step guided sampling loop; variants that run
# out of memory are reported and skipped. Writes benchmarks/results-<device>.json and .md;
# PROFILE_DIR=DIR also traces each variant there and reports its kernel time per operation.
# On a host whose JAX backend is the CPU it stops at once, leaving results-cpu.* as they are.
BATCHES ?= 64,128,256
REMAT ?= none,dots_saveable
ATTENTION ?=
PROFILE_DIR ?=
bench-accelerator: $(STAMP)
	$(BIN)/python -m ditjax.bench --mode=train,sample --model=DiT-XL/2,DiT-B/2 \
		--dtype=bfloat16 --batch_size=$(BATCHES) --remat=$(REMAT) --attention_impl=$(ATTENTION) \
		--sample_steps=50 --repeats=3 --out_dir=benchmarks --require_accelerator \
		$(if $(PROFILE_DIR),--profile_dir=$(PROFILE_DIR))

clean:
	rm -rf $(VENV) $(DEMO_DIR)
