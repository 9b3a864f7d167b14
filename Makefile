# Two commands do everything on a fresh Debian machine: `make demo` and `make test`.
# Each step leaves a stamp in .venv/, so re-running skips what is already done.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Debian packages: TTS engines for the offline corpus, audio tools, the build tool, a browser for the UI tests.
APT_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
                sox libsndfile1 ninja-build chromium chromium-driver fonts-dejavu-core
DEMO_OUT ?= demo_out
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test bench clean
setup: $(VENV)/.installed

$(VENV)/.apt: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@mkdir -p $(VENV) && touch $@

$(VENV)/.torch: | $(VENV)/.apt
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check "torch==2.13.0" setuptools wheel ninja
	@touch $@

# The editable install builds speechmax._C; it is redone when the C++ or the packaging changes.
$(VENV)/.installed: $(VENV)/.apt $(VENV)/.torch setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h)
	$(PIP) install -q --disable-pip-version-check --no-build-isolation -e ".[test]"
	@touch $@

demo: setup
	$(VENV)/bin/speechmax demo --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(VENV)/bin/speechmax bench vocoder --quick --json
	$(VENV)/bin/speechmax bench maximize --quick --json

clean:
	rm -rf build speechmax/_C*.so $(DEMO_OUT) .pytest_cache

# ---- Reproducing the shipped models (hours of CPU; every step resumes where it stopped) ----------------
# `make corpora` builds the offline corpora (kept out of git); `make train-models` trains the classifiers
# and priors into runs/ and copies them to speechmax/assets/; the vocoder trains in checkpoints/vocoder
# (its resumable checkpoint is committed) with `make train-vocoder`, shipped by `make ship-vocoder`.
SM := $(VENV)/bin/speechmax
CORPUS := data/sc1000
VOCDATA := data/voc
EPOCHS_CLASSIFIER ?= 12
EPOCHS_SEPARATE ?= 8
EPOCHS_PAPER ?= 12
EPOCHS_PRIOR ?= 10
EPOCHS_PRIOR_PAPER ?= 6
THREADS ?= 1
.PHONY: corpora train-models train-vocoder ship-vocoder evaluate-full
corpora:
	[ -f $(CORPUS)/corpus.json ] && grep -q '"complete": true' $(CORPUS)/corpus.json || \
	  $(SM) corpus build --out $(CORPUS) --speakers 1000 --seed 1000 --workers 2
	[ -f $(VOCDATA)/vocoder.json ] && grep -q '"complete": true' $(VOCDATA)/vocoder.json || \
	  $(SM) corpus build-vocoder --out $(VOCDATA) --minutes 60 --seed 2000
train-models:
	$(SM) train classifier --data $(CORPUS) --out runs/classifier --preset classifier --epochs $(EPOCHS_CLASSIFIER) --seed 1 --threads $(THREADS)
	$(SM) train classifier --data $(CORPUS) --out runs/classifier-separate --preset classifier-separate --epochs $(EPOCHS_SEPARATE) --seed 2 --threads $(THREADS)
	$(SM) train classifier --data $(CORPUS) --out runs/classifier-paper --preset classifier-paper --epochs $(EPOCHS_PAPER) --seed 3 --no-augment --threads $(THREADS)
	$(SM) train prior --data $(CORPUS) --out runs/prior --preset prior --epochs $(EPOCHS_PRIOR) --seed 4 --classifier runs/classifier/model --threads $(THREADS)
	$(SM) train prior --data $(CORPUS) --out runs/prior-paper --preset prior-paper --epochs $(EPOCHS_PRIOR_PAPER) --seed 5 --classifier runs/classifier/model --threads $(THREADS)
	for m in classifier classifier-separate classifier-paper prior prior-paper; do \
	  cp runs/$$m/model.safetensors speechmax/assets/$$m.safetensors; cp runs/$$m/model.json speechmax/assets/$$m.json; \
	  [ ! -f runs/$$m/confusion.png ] || cp runs/$$m/confusion.png speechmax/assets/$$m-confusion.png; done
# bf16 GEMMs in the training stack where the CPU multiplies bf16 natively (AVX512-BF16 / AMX): 1.44x the fp32
# step on an AMX Xeon (benchmarks/vocoder_train_step.py); elsewhere autocast would emulate bf16, slower than fp32.
VOCODER_BF16 ?= $(shell grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null && echo --bf16)
train-vocoder:
	$(SM) train vocoder --data $(CORPUS) --data $(VOCDATA) --out checkpoints/vocoder --threads $(THREADS) $(VOCODER_BF16)
ship-vocoder:
	$(SM) train vocoder --data $(CORPUS) --out checkpoints/vocoder --export speechmax/assets/vocoder --measure
# The paper-scale evaluation (10,000 starts per class; 6.7 h of both cores measured, RESULTS.md): each finished target is kept in
# checkpoints/evaluate/partial/ (small; committed), so it accumulates over sittings and machines.
evaluate-full:
	$(SM) evaluate --out checkpoints/evaluate --threads $(THREADS)
