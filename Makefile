# The two commands: `make demo` and `make test`. Both bootstrap .venv on a fresh machine first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# Pinned so this machine installs torch from its local disk in about a minute.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_PINS)
	$(PIP) install --quiet -e ".[dev]" $(TORCH_PINS)
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m hf_localvit.demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests -q

clean:
	rm -rf $(VENV) demo_output .pytest_cache
