"""Every ```python block of the README runs as printed, from the repository root.

The blocks read MNIST from ``../shared/data``, as the README says. Every fenced
block must be marked ``python`` or ``bash``, so a snippet cannot escape this
test by being fenced as ``py`` or left unmarked.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
FENCES = re.findall(r"^```(\S*)", README, flags=re.M)
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)


def test_every_fenced_block_is_python_or_bash() -> None:
    openers = FENCES[::2]  # fences alternate: an opener, then its closer
    assert FENCES[1::2] == [""] * len(openers), "a fence opens without closing"
    assert set(openers) <= {"python", "bash"}, openers
    assert openers.count("python") == len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_a_readme_python_block_runs_as_printed(
    block: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # "../shared/data" is relative to the repository root
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    if "print(loss.item())" in block:  # the quick starts print one training loss
        loss = float(capsys.readouterr().out.split()[-1])
        assert math.isfinite(loss) and 0.0 < loss < 10.0
