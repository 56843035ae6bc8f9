"""The benchmark compares like with like: every system starts from the same weights and batch.

No timing here (speed is measured by the benchmark, never asserted); only
that each system's first steps compute the same losses, so a ratio in the
table compares the same work.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "examples")]

from train_step import build_systems, combine  # noqa: E402


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


def test_whole_run_systems_train_alike_from_the_examples_weights() -> None:
    from mnist_common import load_splits
    from whole_run import epoch_runners, time_run

    data = load_splits(str(DATA), False, np.float32)
    runners = epoch_runners(data, seed=42, steps=3)
    assert {"tapegrad", "tapegrad_eager", "numpy", "torch"} <= set(runners)
    report = time_run(runners, epochs=2)
    assert set(report["seconds"]) == set(runners)
    assert all(seconds > 0 for seconds in report["seconds"].values())
    # A third epoch: each system's losses go on from where its last epoch ended.
    losses = {name: run() for name, run in runners.items()}
    for name, values in losses.items():
        np.testing.assert_allclose(values, losses["numpy"], rtol=1e-4, err_msg=name)
    # The example's replayed step is its eager step, bit for bit.
    assert losses["tapegrad"].tolist() == losses["tapegrad_eager"].tolist()


def test_repeated_runs_combine_into_median_ratios_with_their_range() -> None:
    def run(numpy_us: float, replay_us: float) -> dict[str, Any]:
        medians = {"numpy": numpy_us, "tapegrad_replay": replay_us}
        ratios = {f"{k}/numpy": v / numpy_us for k, v in medians.items()}
        return {"threads": 1, "retain_freed_memory": True,
                "batches": {"32": {"median_us": medians, "ratios": ratios}},
                "peak_step_bytes_batch32": {"numpy": 2.0}, "op_overhead_us": {"numpy_add": 0.5}}

    combined = combine([run(100, 130), run(200, 220), run(100, 150)])
    batch = combined["batches"]["32"]
    assert combined["repeats"] == 3
    assert batch["median_us"] == {"numpy": 100, "tapegrad_replay": 150}
    assert batch["ratios"]["tapegrad_replay/numpy"] == 1.3  # the median ratio, not a ratio of medians
    assert batch["ratio_ranges"]["tapegrad_replay/numpy"] == (1.1, 1.5)
