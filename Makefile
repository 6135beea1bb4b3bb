# Two commands on a fresh machine: `make train` (the main job) and `make test`.
# Both create the virtual environment .venv on first use, with torch's CPU build
# pinned by constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup train test bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

train: setup
	$(BIN)/rnnkit train

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/rnnkit bench
