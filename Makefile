# One command to install and answer a question, one to run the tests (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The speech stack's threads: 2 cores here, and two jobs asking for both slow each other ~10x.
export OMP_NUM_THREADS ?= 2

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	touch $@

demo: install
	$(BIN)/vivavoce chat examples/question.wav -o answer.wav

test: install
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python benchmarks/cascade.py

clean:
	rm -rf $(VENV) cache runs reports answer.wav
