# lora-rffi: the two commands a new machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMPS := .make-stamps
APT_PACKAGES := python3-soapysdr libsoapysdr-dev soapysdr-tools g++ make mosquitto redis-server postgresql \
	gnuradio
SOAPY_MODULE_DIR := $(CURDIR)/native/build
export SOAPY_SDR_PLUGIN_PATH := $(SOAPY_MODULE_DIR)$(if $(SOAPY_SDR_PLUGIN_PATH),:$(SOAPY_SDR_PLUGIN_PATH))
export PYTHONDONTWRITEBYTECODE := 1
export MPLBACKEND := Agg

.PHONY: install test demo bench lint clean system-packages native

install: system-packages $(STAMPS)/python native

# The C++ SoapySDR 'replay' device module (native/), built with g++ against Debian's libsoapysdr-dev.
native:
	@if [ -f native/Makefile ]; then $(MAKE) -s -C native; fi

# Debian packages, installed only when one is missing (apt-get needs root; sudo is used when present).
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU build on this machine's disk, then the project (editable) with test extras.
$(STAMPS)/python: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	$(PY) tools/link_soapysdr.py
	@mkdir -p $(STAMPS) && touch $@

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

# The main job on the built-in simulated radio (`lora-rffi demo`, each step a command it prints): simulate a
# fleet, train the default model with the benchmarked recipe, evaluate it with and without the CFO gate, enroll
# two more devices without retraining, authenticate a live stream with two rogues (one tuned to a device's
# CFO) at a pace the machine sustains, and print one summary table and the paths of everything written.
DEMO := out/demo
demo: install
	$(BIN)/lora-rffi demo -o $(DEMO)

bench: install
	OMP_NUM_THREADS=2 $(PY) benchmarks/run.py

lint: install
	$(BIN)/ruff check lorarffi tests benchmarks tools

clean:
	rm -rf $(STAMPS) out build native/build .pytest_cache .hypothesis
