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

clean:
	rm -rf build speechmax/_C*.so $(DEMO_OUT) .pytest_cache
