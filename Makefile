# The two commands: `make mnist` (the main job) and `make test` (every check).
# Both set up their own virtual environment from nothing.
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

# The main job: train the seed's MLP on MNIST the functional way.
mnist: $(VENV)/.installed
	$(PY) examples/mnist.py --data-dir $(DATA)

demo: mnist

# Every check: strict typing of the package, the examples and the tests, then pytest.
# One BLAS thread: the suite's matrices are small, and OpenBLAS threads that
# spin while another process holds the CPU made single tests up to 15x slower.
test: $(VENV)/.installed
	$(PY) -m mypy
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m pytest tests tapegrad examples

# Speed: one step of every system, then whole default runs (ratios; never timed tests).
bench: $(VENV)/.installed
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/whole_run.py --data-dir $(DATA)

clean:
	rm -rf $(VENV) build *.egg-info
