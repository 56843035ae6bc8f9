"""The README's quick-start code runs as printed (on random images instead of MNIST)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
QUICK_START = README.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
BLOCKS = re.findall(r"```python\n(.*?)```", QUICK_START, flags=re.S)


def test_the_quick_start_has_its_two_examples() -> None:
    assert len(BLOCKS) == 2


@pytest.mark.parametrize("block", BLOCKS, ids=["functional", "torchlike"])
def test_a_quick_start_example_runs(block: str, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    namespace: dict[str, Any] = {
        "images": rng.random((64, 784), dtype=np.float32),
        "labels": rng.integers(0, 10, 64),
    }
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    if "fast_step" in namespace:
        loss = float(capsys.readouterr().out)
        assert 0.0 < loss < 10.0
    else:
        x, y = namespace["Tensor"](namespace["images"][:32]), namespace["Tensor"](namespace["labels"][:32])
        assert np.isfinite(namespace["step"](x, y).item())
