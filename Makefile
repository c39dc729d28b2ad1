# torchstn: the two commands of the README.
#   make demo   set up .venv and run the main job: train a spatial transformer on distorted
#               MNIST (5 to 9 minutes on 2 cores from a fresh clone, install included)
#               and draw what it learned, in demo/
#   make test   set up .venv and run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# MNIST lives beside the checkout on our machines; elsewhere pass DATA_DIR=... or set
# TORCHSTN_DATA (the folder holding mnist/t10k-images-idx3-ubyte.gz, ...).
DATA_DIR ?= $(firstword $(wildcard ../shared/datasets))
STAMP := $(VENV)/.torchstn-installed
# With no data folder, missing MNIST files are downloaded (verified) into the user cache.
DATA_ARGS := $(if $(DATA_DIR),--data-dir $(DATA_DIR),--download)
DEMO_DIR ?= demo
DEMO_EPOCHS ?= 5
# Test processes (pytest-xdist; idle processes take tests from busy ones): 2 keeps both cores of
# our machines busy, where one process leaves one idle through the single-threaded parts
# (tracing, exports, Numba compiling). TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2

.PHONY: setup demo test lint clean

setup: $(STAMP)

# torch is installed first and pinned: an unpinned torch would pull the CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[experiments,dev]'
	touch $@

# Re-running continues (or, when finished, just redraws) the run in $(DEMO_DIR).
demo: $(STAMP)
	$(BIN)/torchstn demo $(DATA_ARGS) --out $(DEMO_DIR)/families.png
	$(BIN)/torchstn train --dataset mnist --distortion rts --model st-cnn-affine \
		--epochs $(DEMO_EPOCHS) --seed 0 --out $(DEMO_DIR)/st-cnn-affine-rts --resume $(DATA_ARGS)

# pytest exits with 5 when it collects no tests; that is not a failure of the code.
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(DEMO_DIR)
