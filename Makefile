# The two commands of the README:
#   make demo   set up, then run the main job on the embedded Fashion-MNIST subset
#   make test   set up, then run the test suite (fast suite, then the slow end-to-end runs)
PYTHON      ?= python3
VENV        ?= .venv
# torch is pinned here, not in pyproject: a bare `torch` requirement pulls a multi-GB CUDA build.
# The default index is PyTorch's CPU-only one; for CUDA use e.g.
# TORCH_INDEX=https://download.pytorch.org/whl/cu126, or TORCH_INDEX= for PyPI's default build.
TORCH       ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
FMNIST_DIR  ?= /usr/share/datasets/fashion-mnist

BIN   := $(VENV)/bin
STAMP := $(VENV)/.kdedge-installed

.PHONY: install demo test test-fast test-slow fmnist-data clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/kdedge distill recipes/demo.yaml

# The full Fashion-MNIST (Debian's dataset-fashion-mnist) is used by the slow tests and full recipes.
fmnist-data:
	@if [ -f "$(FMNIST_DIR)/train-images-idx3-ubyte.gz" ]; then \
		echo "Fashion-MNIST found in $(FMNIST_DIR)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "NOTE: full Fashion-MNIST not found in $(FMNIST_DIR); tests that need it will skip." \
		     "Install it with: sudo apt-get install dataset-fashion-mnist"; \
	fi

test-fast: install
	$(BIN)/pytest

test-slow: install fmnist-data
	$(BIN)/pytest -m slow

test: test-fast test-slow

clean:
	rm -rf $(VENV) runs build *.egg-info
