"""Rules are written once: on tensors, typed by `VJPRule`, asking `is_recording()` where they ask.

Issue 12 measured the rules' second, raw-array copies and deleted those that an eager
training step did not need (tinygrad's rules are written once); `affine` keeps its copy,
with the figure in a comment, and this file checks that it still equals the recorded rule.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mypy import api

import tapegrad as tg
from tapegrad._arrays._backend import select

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "tapegrad" / "_core"
OP_MODULES = ("_math.py", "_reduce.py", "_shape.py", "_linalg.py", "_dispatch.py")


def _tree(name: str) -> ast.Module:
    return ast.parse((CORE / name).read_text(), filename=name)


# ---- the rules' types -------------------------------------------------------------------
BAD_RULE = '''
from tapegrad._core._primitive import primitive

GOOD = primitive("good", lambda g, out, inputs, p, needs: (g * 2, None if needs[1] else inputs[1]))
BAD = primitive("bad", lambda g, out, inputs, p, needs: (g.nope,))
'''


def test_a_rule_written_as_a_lambda_is_type_checked(tmp_path: Path) -> None:
    # `VJPRule` is a Callable, so mypy gives the lambda's parameters their types; a
    # Protocol would leave them Any, and `g.nope` would pass silently.
    bad = tmp_path / "bad_rule.py"
    bad.write_text(BAD_RULE)
    stdout, stderr, _ = api.run(["--config-file", str(ROOT / "pyproject.toml"), "--no-error-summary", str(bad)])
    assert stderr == ""
    errors = [re.sub(r"^\S*[/\\]bad_rule\.py:", "bad_rule.py:", line) for line in stdout.splitlines()]
    assert errors == ['bad_rule.py:5: error: "Tensor" has no attribute "nope"  [attr-defined]']


def test_grads_is_defined_once_in_primitive() -> None:
    defined_in = [
        path.name
        for path in sorted(CORE.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and any(isinstance(t, ast.Name) and t.id == "Grads" for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
    ]
    assert defined_in == ["_primitive.py"]


@pytest.mark.parametrize("module", OP_MODULES)
def test_a_rule_that_is_one_return_is_a_lambda_in_its_registration(module: str) -> None:
    # HIPS autograd's one-line table, typed: a def is for a rule with more to say.
    one_return = [
        node.name
        for node in _tree(module).body
        if isinstance(node, ast.FunctionDef) and node.name.endswith("_vjp")
        and len(node.body) == 1 and isinstance(node.body[0], ast.Return)
    ]
    assert one_return == []


# ---- recording state ---------------------------------------------------------------------
@pytest.mark.parametrize("module", OP_MODULES)
def test_ops_ask_is_recording_not_the_private_context_variable(module: str) -> None:
    names = {node.id for node in ast.walk(_tree(module)) if isinstance(node, ast.Name)}
    imported = {
        alias.name for node in ast.walk(_tree(module)) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert "_ACTIVE" not in names | imported


# ---- the one kept array path ---------------------------------------------------------------
def _bits(a: Any) -> Any:
    return np.ascontiguousarray(a).view(np.uint8)


@pytest.mark.parametrize("lead", [(5,), (2, 3)])
def test_affine_array_path_equals_its_recorded_path_bit_for_bit(lead: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    x = tg.tensor(rng.standard_normal((*lead, 7)).astype(np.float32))
    w = tg.tensor(rng.standard_normal((7, 4)).astype(np.float32))
    b = tg.tensor(rng.standard_normal(4).astype(np.float32))

    def grads() -> list[Any]:
        with tg.Tape() as tape:
            loss = tg.tanh(tg.affine(x, w, b)).sum()
        return tape.gradient(loss, [x, w, b])

    eager = grads()  # nothing records the rule: the array path
    with tg.Tape():  # an outer tape records the rule: the path written on tensors
        recorded = grads()
    for e, r in zip(eager, recorded):
        assert e.shape == r.shape and e.dtype == r.dtype
        assert (_bits(e.data) == _bits(r.data)).all()


# ---- the select kernel ------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 5), (256, 128)])  # below and above the bit-masking size
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("case", ["array-zero", "zero-array", "array-array", "scalar-array", "broadcast"])
def test_select_equals_numpy_where_bit_for_bit(shape: tuple[int, int], dtype: type, case: str) -> None:
    rng = np.random.default_rng(1)
    a: Any = rng.standard_normal(shape).astype(dtype)
    a.flat[:5] = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    b: Any = rng.standard_normal(shape).astype(dtype)
    c = rng.random(shape) > 0.5
    x, y = {
        "array-zero": (a, 0),
        "zero-array": (0, a),
        "array-array": (a, b),
        "scalar-array": (-0.0, a),
        "broadcast": (a, b[:1]),  # not the mask's shape: NumPy's where does it
    }[case]
    got, expected = select(c, x, y), np.where(c, x, y)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert (_bits(got) == _bits(expected)).all()
