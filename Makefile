# The two commands of the README:
#   make demo   set up, then run the main job on the embedded Fashion-MNIST subset
#   make test   set up, then run the test suite (fast suite, then the slow end-to-end runs)
PYTHON      ?= python3
VENV        ?= .venv
# torch is pinned here, not in pyproject: a bare `torch` requirement pulls a multi-GB CUDA build.
# Where pip is configured with a local CPU wheel (as on kdedge's CI machines) the default takes it.
# Elsewhere choose the build: TORCH_INDEX=https://download.pytorch.org/whl/cpu (CPU only, small) or
# TORCH_INDEX=https://download.pytorch.org/whl/cu126 (CUDA); empty means pip's default index.
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=
FMNIST_DIR  ?= /usr/share/datasets/fashion-mnist

BIN        := $(VENV)/bin
CORE_STAMP := $(VENV)/.kdedge-core
DEMO_STAMP := $(VENV)/.kdedge-demo
DEV_STAMP  := $(VENV)/.kdedge-dev

.PHONY: install install-demo install-dev demo test test-fast test-slow fmnist-data sshd clean

# the package and what it needs to run (the demo needs nothing more)
$(CORE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install -e .
	touch $(CORE_STAMP)

# plus nvidia-modelopt (pure Python, ~20 s): the demo's `export --int8` then also writes the TensorRT-form
# INT8 model (symmetric Q/DQ), the one a Jetson runs; without it that format is skipped with a note
$(DEMO_STAMP): $(CORE_STAMP)
	$(BIN)/python -m pip install -e ".[modelopt]"
	touch $(DEMO_STAMP)

# plus the test tools and extra offline datasets
$(DEV_STAMP): $(CORE_STAMP)
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(DEV_STAMP)

install: $(CORE_STAMP)

install-demo: $(DEMO_STAMP)

install-dev: $(DEV_STAMP)

demo: install-demo
	$(BIN)/kdedge distill recipes/demo.yaml
	$(BIN)/kdedge export runs/demo --int8
	$(BIN)/kdedge bench runs/demo

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

# An OpenSSH server for the SSH transport tests (kdedge.remote.ssh): they start their own throwaway sshd
# on 127.0.0.1 with keys in a temp dir. Installing Debian's openssh-server also enables its ssh service
# (port 22) where systemd runs; in containers it is not started.
sshd:
	@if [ -x /usr/sbin/sshd ]; then \
		echo "OpenSSH server found (/usr/sbin/sshd)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server; \
	else \
		echo "NOTE: /usr/sbin/sshd not found; the SSH transport tests will skip." \
		     "Install it with: sudo apt-get install openssh-server"; \
	fi

test-fast: install-dev sshd
	$(BIN)/pytest

test-slow: install-dev fmnist-data
	$(BIN)/pytest -m slow

test: test-fast test-slow

clean:
	rm -rf $(VENV) runs build *.egg-info
