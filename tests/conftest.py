"""Shared test settings: a fast Hypothesis profile, GPU tests that skip without a GPU, and
assertion rewriting for the helpers in `_support`."""

from __future__ import annotations

import hypothesis
import pytest

import tapegrad as tg

# The shared helpers assert too: let pytest explain their failures as it does a test's.
pytest.register_assert_rewrite("_support")

# Few examples and no per-example deadline: the whole engine suite must stay
# within a minute or so on a two-core machine, and the first call into torch is slow.
hypothesis.settings.register_profile("tapegrad", max_examples=30, deadline=None)
hypothesis.settings.load_profile("tapegrad")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked `gpu` only where CuPy sees no CUDA device."""
    if tg.cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
