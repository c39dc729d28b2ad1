# torchstn: the two commands of the README.
#   make demo   set up .venv and run the main job (for now: the transform-family demo)
#   make test   set up .venv and run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# MNIST lives beside the checkout on our machines; elsewhere pass DATA_DIR=... or set
# TORCHSTN_DATA (the folder holding mnist/t10k-images-idx3-ubyte.gz, ...).
DATA_DIR ?= $(firstword $(wildcard ../shared/datasets))
STAMP := $(VENV)/.torchstn-installed

.PHONY: setup demo test lint clean

setup: $(STAMP)

# torch is installed first and pinned: an unpinned torch would pull the CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/torchstn demo $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --out demo.png

# pytest exits with 5 when it collects no tests; that is not a failure of the code.
test: $(STAMP)
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo.png
