"""The typing promises: what must type-check does, and what must not does not.

mypy runs once, on `typing_ok.py` and on a deliberately wrong snippet together,
because each run costs seconds.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest
from mypy import api

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parents[1]

BAD = '''
import attrs
import tapegrad as tg
from tapegrad import Tape, Tensor


@attrs.frozen
class Linear:
    weight: Tensor
    bias: Tensor


def step(params: Linear, x: Tensor) -> None:
    with Tape() as tape:
        loss = (x @ params.weight + params.bias).sum()
    grads = tape.gradient(loss, params)
    count: int = grads.weight
    grads.momentum
    params.weight = grads.weight
    named: dict[str, Tensor] = tape.gradient(loss, [params.weight])
    replayed = tg.replay(step)
    replayed(params)
'''

EXPECTED_ERRORS = [
    'bad.py:17: error: Incompatible types in assignment (expression has type "Tensor", '
    'variable has type "int")  [assignment]',
    'bad.py:18: error: "Linear" has no attribute "momentum"  [attr-defined]',
    'bad.py:19: error: Property "weight" defined in "Linear" is read-only  [misc]',
    'bad.py:20: error: Argument 2 to "gradient" of "Tape" has incompatible type "list[Tensor]"; '
    'expected "dict[str, Tensor]"  [arg-type]',
    'bad.py:22: error: Missing positional argument "x" in call to "__call__" of "Replayed"  [call-arg]',
]


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    bad = tmp_path_factory.mktemp("typing") / "bad.py"
    bad.write_text(BAD)
    stdout, stderr, _ = api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--no-error-summary", str(HERE / "typing_ok.py"), str(bad)]
    )
    assert stderr == ""
    # mypy's cache may name the file by the temporary path of an earlier run.
    return [re.sub(r"^\S*[/\\]bad\.py:", "bad.py:", line) for line in stdout.splitlines()]


def test_typing_ok_passes_strict_mypy(mypy_report: list[str]) -> None:
    assert [line for line in mypy_report if "typing_ok.py" in line] == []


def test_wrong_uses_of_gradients_are_type_errors(mypy_report: list[str]) -> None:
    errors = [line for line in mypy_report if line.startswith("bad.py")]
    assert errors == EXPECTED_ERRORS


def test_typing_ok_runs() -> None:
    spec = importlib.util.spec_from_file_location("typing_ok", HERE / "typing_ok.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.run() == pytest.approx([-0.6, -3.0, 3.0, 2.0, 8.0])
