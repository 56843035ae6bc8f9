# The two commands: `make mnist` (the main job) and `make test` (every check).
# Each sets up its own virtual environment from nothing: a light one for the main
# job, and the full development one (torch is the tests' oracle) for the checks.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data

.PHONY: mnist demo test typecheck pytest bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# The main job has its own light environment: numpy, attrs, tqdm and matplotlib
# (the `mnist` extra, about 200 MB, seconds to install). torchvision and torch
# (gigabytes) only download MNIST; where the data is missing, run
# `make mnist EXTRAS=examples` to install them too.
MNIST_VENV ?= .venv-mnist
EXTRAS ?= mnist

$(MNIST_VENV)/.installed-$(EXTRAS): pyproject.toml
	$(PYTHON) -m venv $(MNIST_VENV)
	$(MNIST_VENV)/bin/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

# The main job: train the seed's MLP on MNIST the functional way.
mnist: $(MNIST_VENV)/.installed-$(EXTRAS)
	$(MNIST_VENV)/bin/python examples/mnist.py --data-dir $(DATA)

demo: mnist

# Every check: the import layers (no import runs up, no circle but the documented one),
# strict typing of the package, the examples and the tests, then pytest.
# One BLAS thread: the suite's matrices are small, and OpenBLAS threads that
# spin while another process holds the CPU made single tests up to 15x slower.
test: $(VENV)/.installed
	$(PY) tests/import_layers.py
	$(PY) -m mypy
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m pytest tests tapegrad examples

# Speed: one step of every system, then whole default runs (ratios; never timed tests).
bench: $(VENV)/.installed
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/whole_run.py --data-dir $(DATA)

clean:
	rm -rf $(VENV) $(MNIST_VENV) build *.egg-info
