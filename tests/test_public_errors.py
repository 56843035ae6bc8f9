"""Errors teach: misuse at the public surface gets an error that names the op, the shapes or
dtypes, and the fix.

The whole message is pinned, so a change in wording is a deliberate one. `MISUSES`
is also printed in the README ("Misuses that are caught"); a test keeps the two
identical, so the README never drifts from what the code says. `MESSAGES` pins
more calls the same way, and the tests at the end pin what a table cannot: the
file and line that `debug_nans` names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

import tapegrad as tg
from tapegrad import Tape, nn, optim

from _support import line_after

README = Path(__file__).resolve().parents[1] / "README.md"


def _zeros(*shape: int) -> tg.Tensor:
    return tg.tensor(np.zeros(shape, np.float32))


def _second_gradient() -> None:
    x = tg.tensor(2.0)
    with tg.Tape() as tape:
        y = x * x
    tape.gradient(y, x)
    tape.gradient(y, x)


def _reentered_tape() -> None:
    tape = tg.Tape()
    with tape:
        with tape:
            pass


def _mismatched_state() -> None:
    params = {"w": tg.tensor([1.0]), "b": tg.tensor([0.0])}
    opt = optim.adam()
    opt.update(params, opt.init({"w": tg.tensor([1.0])}), params)


def _item_inside_replay() -> None:
    tg.replay(lambda x: (x * 2.0).sum().item())(tg.tensor([1.0, 2.0]))


def _replay_under_a_tape() -> None:
    double = tg.replay(lambda x: x * 2.0)
    with tg.Tape():
        double(tg.tensor([1.0]))


def _replay_writes_into_untraced_memory() -> None:
    def step(x: tg.Tensor) -> tg.Tensor:
        buffer = np.empty(x.shape, x.dtype)
        np.multiply(x.data, 2.0, out=buffer)
        return tg.Tensor(buffer)

    tg.replay(step)(tg.tensor([1.0]))


def _backward_twice_through_a_graph() -> None:
    from tapegrad import torchlike as tl
    from tapegrad.torchlike import _autograd

    w = tl.Tensor([1.0, 2.0], requires_grad=True)
    hidden = w * 3.0
    try:
        (hidden * hidden).sum().backward()
        hidden.sum().backward()  # through the graph the first backward() freed
    finally:
        _autograd.release()  # the refused graph stays recorded, as in PyTorch; later tests need no tape


def _target_after_the_block() -> None:
    w = tg.tensor([1.0, 2.0])
    with tg.Tape() as tape:
        per_example = w * w
    tape.gradient(per_example.sum(), w)


def _complex_on_the_path() -> None:
    x = tg.tensor([1.0, 2.0])
    with tg.Tape() as tape:
        y = tg.abs(x * tg.tensor(np.array([1j, 2j], dtype=np.complex64))).sum()
    tape.gradient(y, x)


def _print_inside_replay() -> None:
    def shows(x: tg.Tensor) -> tg.Tensor:
        print(x)
        return x

    tg.replay(shows)(tg.tensor(1.0))


def _kept_by_a_side_effect() -> None:
    history: list[tg.Tensor] = []

    def step(w: tg.Tensor) -> tg.Tensor:
        history.append((w * w).sum())
        return w * 0.5

    tg.replay(step)(tg.tensor([1.0]))


def _argument_dict_updated() -> None:
    def step(params: dict[str, tg.Tensor]) -> tg.Tensor:
        params["w"] = params["w"] * 0.5
        return params["w"].sum()

    tg.replay(step)({"w": tg.tensor([1.0])})


def _generator_argument() -> None:
    def noisy(x: tg.Tensor, rng: np.random.Generator) -> tg.Tensor:
        return x + tg.tensor(rng.normal(size=x.shape))

    tg.replay(noisy)(tg.tensor([0.0]), np.random.default_rng(0))


def _donated_after_failure() -> None:
    def scaled(w: tg.Tensor, x: tg.Tensor) -> tg.Tensor:
        return w * x + 1.0

    step = tg.replay(scaled, donate_argnums=0)
    x = tg.tensor([2.0])
    w = step(step(tg.tensor([1.0]), x), x)
    try:
        with np.errstate(over="raise"):
            step(w, tg.tensor([3e38]))
    except FloatingPointError:
        pass
    w.numpy()


def _leaf_updated_in_place() -> None:
    from tapegrad import torchlike as tl
    w = tl.Tensor([1.0, 2.0], requires_grad=True)
    w -= 0.1 * w  # outside no_grad(): refused, as in PyTorch


def _tensor_lr_not_0d() -> None:
    optim.sgd(tg.tensor([0.1, 0.2]))


MISUSES: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("a list where a Tensor is expected", lambda: tg.exp([1.0, 2.0]), TypeError,  # type: ignore[arg-type]
     "`exp`: x must be a Tensor, a Python number or an array, got list; wrap it with tapegrad.tensor(...)"),
    ("a list as an operand", lambda: tg.tensor([1.0]) + [1.0], TypeError,  # type: ignore[operator]
     "`add`: expected a Tensor, a Python number or an array, got list; wrap it with tapegrad.tensor(...)"),
    ("misaligned matmul", lambda: _zeros(32, 784) @ _zeros(128, 784), ValueError,
     "`matmul`: shapes (32, 784) and (128, 784) do not align; did you mean `x @ w.T`?"),
    ("shapes that do not broadcast", lambda: _zeros(3, 4) + _zeros(5), ValueError,
     "`add`: shapes (3, 4) and (5,) do not broadcast; NumPy's rule matches shapes from the right, "
     "and each pair of sizes must be equal or 1. Reshape one operand (e.g. x[:, None]) to line them up."),
    ("a non-boolean condition in where", lambda: tg.where(tg.tensor([1.0]), 1.0, 0.0), TypeError,
     "`where`: condition must be boolean, got dtype float32; compare first, e.g. where(x > 0, x, 0)"),
    ("differentiating with respect to an integer tensor",
     lambda: tg.Tape().gradient(tg.tensor(1.0), {"labels": tg.tensor([1, 2])}), TypeError,
     "Tape.gradient: sources['labels'] has dtype int64; only floating tensors can be differentiated. "
     "Cast it first, e.g. x.astype('float32')."),
    ("a non-tensor in the sources", lambda: tg.Tape().gradient(tg.tensor(1.0), {"lr": 0.1}), TypeError,
     "Tape.gradient: sources['lr'] is a float, not a Tensor; every leaf of `sources` must be a Tensor (or None)"),
    ("a non-scalar target", lambda: tg.Tape().gradient(tg.tensor([1.0, 2.0]), tg.tensor(1.0)), ValueError,
     "Tape.gradient: target has shape (2,), not a scalar. Reduce it first (e.g. loss.sum() or loss.mean()), "
     "or pass output_gradients= with shape (2,)."),
    ("a second gradient() on a non-persistent tape", _second_gradient, RuntimeError,
     "Tape.gradient: this tape was already used; a non-persistent tape allows one gradient() call. "
     "Use Tape(persistent=True) to call it several times."),
    ("entering a tape that is already recording", _reentered_tape, RuntimeError,
     "Tape: this tape is already recording; a tape cannot be entered twice. Use a new Tape() for a "
     "nested computation."),
    ("float labels given to cross_entropy", lambda: nn.cross_entropy(_zeros(2, 3), tg.tensor([0.0, 1.0])),
     TypeError, "`cross_entropy`: labels must be integer class indices, got dtype float32; convert them "
     "with labels.astype('int64')"),
    ("a label outside [0, classes)", lambda: nn.cross_entropy(_zeros(2, 3), tg.tensor([0, 3])), ValueError,
     "`cross_entropy`: label 3 is outside [0, 3) for logits with 3 classes"),
    ("labels of the wrong shape", lambda: nn.cross_entropy(_zeros(2, 3), tg.tensor([[0, 1]])), ValueError,
     "`cross_entropy`: labels have shape (1, 2) but logits have shape (2, 3); expected labels of shape "
     "(2,), one class per row"),
    ("mse of different shapes", lambda: nn.mse(_zeros(4, 1), _zeros(4)), ValueError,
     "`mse`: prediction has shape (4, 1) but target has shape (4,); reshape one so they match (mse never "
     "broadcasts)"),
    ("an input of the wrong width for Linear",
     lambda: nn.Linear(784, 128).apply(nn.Linear(784, 128).init(tg.random.key(0)), _zeros(32, 100)),
     ValueError, "Linear(784, 128): input has shape (32, 100), but its last axis must have 784 features"),
    ("uint8 pixels given to Linear",
     lambda: nn.Linear(784, 128).apply(nn.Linear(784, 128).init(tg.random.key(0)), tg.tensor(np.zeros((32, 784), np.uint8))),
     TypeError, "Linear(784, 128): input has dtype uint8, but the weights are float32; cast it first, e.g. "
     "x.astype('float32'), and scale pixels: x.astype('float32') / 255"),
    ("a float64 batch given to float32 weights",
     lambda: nn.Linear(784, 128).apply(nn.Linear(784, 128).init(tg.random.key(0)), tg.tensor(np.zeros((32, 784)))),
     TypeError, "Linear(784, 128): input has dtype float64, but the weights are float32; cast it first, e.g. "
     "x.astype('float32')"),
    ("float32 and float64 operands in one op", lambda: _zeros(2) + tg.tensor(np.zeros(2)), TypeError,
     "`add`: operands have dtypes float32 and float64; floating dtypes of different widths are never "
     "promoted silently. Cast one first, e.g. x.astype('float32') or x.astype('float64')"),
    ("an integer operand to a matrix product", lambda: tg.tensor([[1, 2]]) @ tg.tensor([[1], [2]]), TypeError,
     "`matmul`: a has dtype int64, but matrix products need floating operands; cast it first, e.g. "
     "x.astype('float32'), or x.astype('float32') / 255 for pixels"),
    ("a learning rate <= 0", lambda: optim.adam(lr=0.0), ValueError,
     "`adam`: lr must be a positive number or a schedule, got 0.0"),
    ("a decay rate outside [0, 1)", lambda: optim.adam(b1=1.0), ValueError,
     "`adam`: b1 must be in [0, 1), got 1.0"),
    ("a params pytree that does not match the optimizer state", _mismatched_state, ValueError,
     "`adam`: the first moments (state.m) do not match the structure of the parameters at <root>: "
     "dict(*, *) with keys ('b', 'w') vs dict(*) with keys ('w',); was the optimizer state made by init() "
     "for these parameters?"),
    ("an unknown device", lambda: tg.tensor([1.0], device="gpu"), ValueError,
     "device must be 'cpu' or 'cuda', got 'gpu'"),
    ("a float seed for a random key", lambda: tg.random.key(1.5), TypeError,  # type: ignore[arg-type]
     "random.key: seed must be an int, got float"),
    ("a reshape to the wrong size", lambda: _zeros(6).reshape(4, 2), ValueError,
     "`reshape`: cannot reshape a tensor of shape (6,) (6 elements) into shape (4, 2)"),
    ("an axis out of range", lambda: _zeros(2, 3).sum(axis=2), ValueError,
     "`sum`: axis 2 is out of range for a tensor with 2 dimensions"),
    ("a float index", lambda: _zeros(3)[1.0], TypeError,
     "`getitem`: a float is not a valid index; use an int"),
    ("reading a value as a Python number inside a replayed function", _item_inside_replay, tg.ReplayError,
     "replay: x.item() turns the value into a Python number inside a replayed function: the value "
     "would be frozen into the replay. Do it outside the replayed function (return the array and "
     "convert it there), or run this function without replay."),
    ("calling a replayed function under a recording tape", _replay_under_a_tape, tg.ReplayError,
     "replay: a replayed function was called while a Tape is recording; a replay records nothing on "
     "it, so its gradients would be lost. Call it outside the tape, or open the tape inside the "
     "replayed function."),
    ("a second backward() through a graph in the PyTorch-style wrapper", _backward_twice_through_a_graph,
     RuntimeError,
     "backward(): the graph behind this tensor was already freed, by an earlier backward() through it "
     "(or by torchlike.replay); compute it again, or pass retain_graph=True to the first backward(), as "
     "in PyTorch"),
    ("writing into np.empty(...) memory inside a replayed function", _replay_writes_into_untraced_memory,
     tg.ReplayError,
     "replay: an operation writes its result into an array that was created without the function's "
     "traced arguments (for example by np.empty(shape)), so a replay would overwrite the same memory "
     "every call; allocate it with np.empty_like(x) from a traced array instead"),
    ('a target the tape never recorded (reduced after the `with` block)', _target_after_the_block, ValueError,
     'Tape.gradient: the target was not recorded on this tape, so no gradient can reach the sources. Likely causes: it was computed after the `with Tape()` block ended, through .numpy() or a plain array, under stop_recording(), or by stop_gradient(). Compute it inside the `with` block.'),
    ('a complex value between the sources and the target', _complex_on_the_path, TypeError,
     'Tape.gradient: `abs` reads a value of dtype complex64 that depends on the sources; tapegrad does not differentiate complex numbers. Keep complex values off the path from the sources to the target (compute them outside the tape, or from tapegrad.stop_gradient(x)).'),
    ('print() of a traced value inside a replayed function', _print_inside_replay, tg.ReplayError,
     "replay: print(), str() or format() of a traced value inside a replayed function would show the value once, when traced, and never on a replay. Use tapegrad.debug.print('loss {}', loss), which prints on every call, eager or replayed."),
    ('keeping a traced value by a side effect', _kept_by_a_side_effect, tg.ReplayError,
     'replay: a value computed inside the replayed function outlived the call without being returned (it was stored by a side effect, such as history.append(loss) or self.x = y); a replay would never update it. Return it from the function and store it outside.'),
    ("changing an argument's dict in place inside a replayed function", _argument_dict_updated, tg.ReplayError,
     "replay: the function changed its arguments in place (args[0]['w'] was replaced, added or removed); a replay cannot carry that change to the caller's objects. Return the new value instead (e.g. `return new_params`)."),
    ('a NumPy Generator as an argument of a replayed function', _generator_argument, tg.ReplayError,
     'replay: an argument is a Generator; a replay would repeat the numbers it drew when traced on every call. Draw the random arrays outside the replayed function and pass them in (or pass a tapegrad.random key, which retraces per key).'),
    ('using a donated tensor after the replayed call raised', _donated_after_failure, tg.ReplayError,
     'replay: this tensor was donated (donate_argnums) to a replayed call that raised, so its memory may hold a partial update; it cannot be used any more. Keep the arguments you may need after a failure (or do not donate them), as with jax.jit.'),
    ('an in-place update of a parameter outside no_grad() in the PyTorch-style wrapper', _leaf_updated_in_place, RuntimeError,
     '`-=`: a leaf Variable that requires grad is being used in an in-place operation. Update parameters inside `with torchlike.no_grad():`, as in PyTorch'),
    ('a learning rate tensor that is not 0-d', _tensor_lr_not_0d, ValueError,
     '`sgd`: a Tensor lr must be 0-d and floating, got shape (2,) and dtype float32; e.g. tg.tensor(0.1)'),
]


@attrs.frozen
class Linear:
    weight: tg.Tensor
    bias: object


def _integer_source() -> None:
    labels = tg.tensor([0, 1, 1])
    x = tg.tensor([1.0, 2.0, 3.0])
    with Tape() as tape:
        y = (x * labels).sum()
    tape.gradient(y, {"x": x, "labels": labels})


def _integer_target() -> None:
    x = tg.tensor([1, 2])
    with Tape() as tape:
        y = x.sum()
    tape.gradient(y, tg.tensor(1.0))


def _array_in_a_source_pytree() -> None:
    w = tg.tensor(1.0)
    with Tape() as tape:
        y = w * 2
    tape.gradient(y, {"layers": [Linear(w, None), Linear(w, np.zeros(1))]})


# Pinned like MISUSES, but not printed in the README.
MESSAGES: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("matmul with the first operand not transposed", lambda: tg.matmul(tg.tensor(np.zeros((5, 3))), tg.tensor(np.zeros((5, 2)))),
     ValueError, "`matmul`: shapes (5, 3) and (5, 2) do not align; did you mean `x.T @ w`?"),
    ("matmul of a 0-d tensor", lambda: tg.tensor(2.0) @ tg.tensor([1.0, 2.0]), ValueError,
     "`matmul`: shapes () and (2,): matmul needs at least 1-D operands; use `*` to scale by a scalar"),
    ("float64 shapes that do not broadcast", lambda: tg.tensor(np.ones((2, 3))) + tg.tensor(np.ones(4)), ValueError,
     "`add`: shapes (2, 3) and (4,) do not broadcast; NumPy's rule matches shapes from the right, "
     "and each pair of sizes must be equal or 1. Reshape one operand (e.g. x[:, None]) to line them up."),
    ("mul names itself when shapes do not broadcast", lambda: tg.tensor([1.0, 2.0, 3.0]) * tg.tensor([1.0, 2.0]),
     ValueError, "`mul`: shapes (3,) and (2,) do not broadcast; NumPy's rule matches shapes from the right, "
     "and each pair of sizes must be equal or 1. Reshape one operand (e.g. x[:, None]) to line them up."),
    ("a 2-d reshape to the wrong number of elements", lambda: tg.tensor(np.ones((2, 3))).reshape(4, 2), ValueError,
     "`reshape`: cannot reshape a tensor of shape (2, 3) (6 elements) into shape (4, 2)"),
    ("concatenate with mismatched shapes",
     lambda: tg.concatenate([tg.tensor(np.ones((2, 3))), tg.tensor(np.ones((2, 4)))]), ValueError,
     "`concatenate`: shapes [(2, 3), (2, 4)] cannot be joined on axis 0; all other axes must match"),
    ("squeeze of an axis that is not 1", lambda: tg.tensor(np.ones((1, 3))).squeeze(1), ValueError,
     "`squeeze`: axis 1 has length 3, not 1, in shape (1, 3)"),
    ("transpose with an axis out of range", lambda: tg.transpose(tg.tensor(np.zeros((2, 3))), (0, 3)), ValueError,
     "`transpose`: axes (0, 3) are not a permutation of the 2 axes of a tensor of shape (2, 3)"),
    ("an integer tensor among the sources of a recorded computation", _integer_source, TypeError,
     "Tape.gradient: sources['labels'] has dtype int64; only floating tensors can be differentiated. "
     "Cast it first, e.g. x.astype('float32')."),
    ("an integer target", _integer_target, TypeError,
     "Tape.gradient: target has dtype int64; only a floating target can be differentiated"),
    ("an array in a source pytree, named by its path", _array_in_a_source_pytree, TypeError,
     "Tape.gradient: sources['layers'][1].bias is a ndarray, not a Tensor; every leaf of `sources` must be a "
     "Tensor (or None)"),
    ("a str where a Tensor is expected", lambda: tg.exp("1.0"), TypeError,  # type: ignore[arg-type]
     "`exp`: x must be a Tensor, a Python number or an array, got str; wrap it with tapegrad.tensor(...)"),
    ("tensor() of a list of tensors", lambda: tg.tensor([tg.tensor(1.0), tg.tensor(2.0)]), TypeError,
     "tensor(): the list holds Tensors; combine them with tapegrad.stack(...) so the result stays differentiable"),
    ("item() of a tensor with many elements", lambda: tg.tensor([1.0, 2.0]).item(), ValueError,
     "item(): only a tensor with one element can be converted to a Python number, this one has shape (2,); "
     "index or reduce it first"),
    ("clip with crossed bounds", lambda: tg.clip(tg.tensor(0.5), 1.0, 0.0), ValueError,
     "`clip`: min=1.0 is greater than max=0.0"),
]


def readme_row(description: str, error: type[Exception], message: str) -> str:
    """The README's table row for one misuse."""
    return f"| {description} | `{error.__name__}` | {message} |"


@pytest.mark.parametrize(
    ("description", "call", "error", "message"), MISUSES + MESSAGES, ids=[m[0] for m in MISUSES + MESSAGES]
)
def test_misuse_is_caught_with_its_message(
    description: str, call: Callable[[], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        call()
    assert type(info.value) is error
    assert str(info.value) == message


def test_the_readme_lists_every_misuse_with_its_message() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [readme_row(d, e, m) for d, _, e, m in MISUSES if readme_row(d, e, m) not in text]
    assert not missing, "README.md lacks these rows:\n" + "\n".join(missing)


# ---- debug_nans names the op, and the file and line that called it -------------------------
def test_debug_nans_names_the_op_that_made_a_nan() -> None:
    x = tg.tensor([1.0, -1.0])
    with tg.debug_nans():
        line = line_after()
        with pytest.raises(FloatingPointError) as info:
            tg.log(x)
    where = f"{__file__}:{line + 1}: tg.log(x)"
    assert str(info.value) == f"`log` produced nan in its forward pass, called at {where}"


def test_debug_nans_names_the_op_that_made_an_infinity() -> None:
    x = tg.tensor([1.0, 0.0])
    with tg.debug_nans():
        line = line_after()
        with pytest.raises(FloatingPointError) as info:
            y = 1.0 / x
    where = f"{__file__}:{line + 1}: y = 1.0 / x"
    assert str(info.value) == f"`div` produced inf in its forward pass, called at {where}"


def test_debug_nans_names_the_op_whose_backward_rule_made_an_infinity() -> None:
    x = tg.tensor([0.0, 4.0])
    with tg.debug_nans():
        with Tape() as tape:
            line = line_after()
            y = tg.sqrt(x).sum()
        with pytest.raises(FloatingPointError) as info:
            tape.gradient(y, x)
    where = f"{__file__}:{line}: y = tg.sqrt(x).sum()"
    message = f"`sqrt` produced inf in its backward pass (cotangent of input 0), called at {where}"
    assert str(info.value) == message


def test_without_debug_nans_a_nan_passes_silently() -> None:
    with np.errstate(invalid="ignore"):
        y = tg.sqrt(tg.tensor([-1.0]))
    assert np.isnan(y.item())
