# Two commands do everything on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

test: setup
	$(PY) -m pytest -q tests

# make demo: Fashion-MNIST as a JPEG folder (300 train / 50 val images per class, from the subset shipped with the
# package: no network needed), MobileMamba-T2 trained from scratch at 32 px for 2 epochs on CPU, then evaluated
# fused (final raw weights; image size and class count from the checkpoint). DEMO_SOURCE=DIR: a folder with the four
# Fashion-MNIST .gz files, for subsets larger than the shipped one (DEMO_PER_CLASS, DEMO_VAL_PER_CLASS).
DEMO_CACHE         ?= .cache
DEMO_DIR           ?= outputs/demo
DEMO_SOURCE        ?=
DEMO_PER_CLASS     ?= 300
DEMO_VAL_PER_CLASS ?= 50

demo: setup
	$(PY) -m mobilemamba.data.prepare fashion-mnist $(DEMO_CACHE)/fashion_mnist --per-class $(DEMO_PER_CLASS) \
		--val-per-class $(DEMO_VAL_PER_CLASS) $(if $(DEMO_SOURCE),--source $(DEMO_SOURCE))
	MOBILEMAMBA_CACHE=$(DEMO_CACHE) $(PY) train.py experiment=demo hydra.run.dir=$(DEMO_DIR)
	MOBILEMAMBA_CACHE=$(DEMO_CACHE) $(PY) eval.py model=t2 data=fashion_mnist checkpoint=$(DEMO_DIR)/last.ckpt \
		ema=false fuse=true hydra.run.dir=$(DEMO_DIR)/eval

# make bench: the throughput table of every variant (GPU machine), inference and training step
bench: setup
	$(PY) bench.py model=t2,t4,s6,b1,b2,b4 mode=infer amp=bf16 fused=true channels_last=true
	$(PY) bench.py model=t2,t4,s6,b1,b2,b4 mode=train amp=bf16 channels_last=true

clean:
	rm -rf $(VENV) outputs multirun .cache
