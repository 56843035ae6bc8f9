"""Per-op tests: one table, `table.py`, drives the gradient checks, the property tests and
the PyTorch parity tests (JAX's ``LAX_GRAD_OPS``, PyTorch's OpInfo)."""
