"""The benchmark compares like with like: every system starts from the same weights and batch.

No timing here (speed is measured by the benchmark, never asserted); only
that each system's first steps compute the same losses, so a ratio in the
table compares the same work.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from train_step import build_systems  # noqa: E402


@pytest.mark.parametrize("batch", [8, 32])
def test_every_system_computes_the_same_first_losses(batch: int) -> None:
    systems, _ = build_systems(batch)
    assert {"tapegrad", "tapegrad_replay", "torchlike", "torchlike_replay", "numpy", "torch"} <= set(systems)
    losses = {name: [step() for _ in range(3)] for name, step in systems.items()}
    reference = np.asarray(losses["numpy"])
    for name, values in losses.items():
        np.testing.assert_allclose(values, reference, rtol=2e-5, err_msg=name)
    # The replayed steps are the eager ones, bit for bit.
    assert losses["tapegrad_replay"] == losses["tapegrad"]
    assert losses["tapegrad_replay_donated"] == losses["tapegrad"]
    assert losses["torchlike_replay"] == losses["torchlike"]
