"""User-defined primitives: `@custom_vjp` with `defvjp(fwd, bwd)`, as in JAX."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import Tape, Tensor
from tapegrad.testing import check_grads


@tg.custom_vjp
def stable_tanh(x: Tensor) -> Tensor:
    return tg.tanh(x)


def _tanh_fwd(x: Tensor) -> tuple[Tensor, Any]:
    y = stable_tanh(x)  # fwd may call the function itself
    return y, y


def _tanh_bwd(y: Tensor, g: Tensor) -> tuple[Tensor | None, ...]:
    return (g * (1 - y * y),)


stable_tanh.defvjp(_tanh_fwd, _tanh_bwd)


@tg.custom_vjp
def clip_gradient(x: Tensor, bound: float) -> Tensor:
    """The identity, with its gradient clipped to [-bound, bound] (a classic custom rule)."""
    return x


clip_gradient.defvjp(
    lambda x, bound: (x, bound),
    lambda bound, g: (tg.clip(g, -bound, bound), None),
)


@tg.custom_vjp
def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    return -tg.log_softmax(logits)[np.arange(len(labels)), labels.numpy()].mean()


def _ce_fwd(logits: Tensor, labels: Tensor) -> tuple[Tensor, Any]:
    return cross_entropy(logits, labels), (tg.softmax(logits), labels)


def _ce_bwd(residuals: Any, g: Tensor) -> tuple[Tensor | None, ...]:
    probs, labels = residuals
    onehot = tg.tensor(np.eye(probs.shape[1])[labels.numpy()], dtype=probs.dtype)
    return ((probs - onehot) * (g / len(labels)), None)


cross_entropy.defvjp(_ce_fwd, _ce_bwd)


def test_the_custom_rule_is_used() -> None:
    x = tg.tensor([0.5, 3.0, -4.0])
    with Tape() as tape:
        y = (clip_gradient(x, 1.0) * tg.tensor([0.5, 2.0, -3.0])).sum()
    assert tape.gradient(y, x).numpy().tolist() == [0.5, 1.0, -1.0]


def test_a_custom_function_is_one_record_on_the_tape() -> None:
    x = tg.tensor([0.5, -0.25])
    with Tape() as tape:
        stable_tanh(x)
    assert len(tape) == 1


def test_without_a_tape_the_plain_function_runs() -> None:
    calls: list[str] = []

    @tg.custom_vjp
    def f(x: Tensor) -> Tensor:
        calls.append("fun")
        return x * 2

    def fwd(x: Tensor) -> tuple[Tensor, Any]:
        calls.append("fwd")
        return x * 2, None

    f.defvjp(fwd, lambda _, g: (g * 2,))
    f(tg.tensor(1.0))
    assert calls == ["fun"]
    with Tape():
        f(tg.tensor(1.0))
    assert calls == ["fun", "fwd"]


def test_custom_tanh_gradients_to_third_order() -> None:
    check_grads(stable_tanh, [tg.tensor([0.3, -0.7, 1.1])], order=3)


def test_residuals_computed_in_fwd_carry_their_dependence_to_outer_tapes() -> None:
    x = tg.tensor(0.5, dtype=np.float64)
    with Tape() as outer:
        with Tape() as inner:
            y = stable_tanh(x)
        dy = inner.gradient(y, x)
    d2y = outer.gradient(dy, x)
    t = np.tanh(0.5)
    np.testing.assert_allclose(d2y.item(), -2 * t * (1 - t * t))


def test_a_fused_cross_entropy_matches_the_composed_one() -> None:
    logits = tg.tensor(np.random.default_rng(0).standard_normal((4, 3)))
    labels = tg.tensor([0, 2, 1, 2])
    with Tape() as fused_tape:
        fused = cross_entropy(logits, labels)
    with Tape() as plain_tape:
        plain = -tg.log_softmax(logits)[np.arange(4), labels.numpy()].mean()
    np.testing.assert_allclose(fused.item(), plain.item())
    np.testing.assert_allclose(
        fused_tape.gradient(fused, logits).numpy(), plain_tape.gradient(plain, logits).numpy()
    )
    check_grads(lambda z: cross_entropy(z, labels), [logits], order=2)


def test_bwd_must_return_one_cotangent_per_argument() -> None:
    @tg.custom_vjp
    def f(x: Tensor, y: Tensor) -> Tensor:
        return x * y

    f.defvjp(lambda x, y: (x * y, (x, y)), lambda res, g: (g,))
    a, b = tg.tensor(1.0), tg.tensor(2.0)
    with Tape() as tape:
        out = f(a, b)
    message = "`custom_vjp f`: bwd must return a tuple with one cotangent per positional argument (2), got (Tensor("
    with pytest.raises(TypeError, match=re.escape(message)):
        tape.gradient(out, a)


def test_bwd_must_return_tensors() -> None:
    @tg.custom_vjp
    def f(x: Tensor) -> Tensor:
        return x

    f.defvjp(lambda x: (x, None), lambda res, g: (1.0,))  # type: ignore[arg-type, return-value]
    a = tg.tensor(1.0)
    with Tape() as tape:
        out = f(a)
    message = "`custom_vjp f`: bwd returned a float for argument 0; return a Tensor or None"
    with pytest.raises(TypeError, match=re.escape(message)):
        tape.gradient(out, a)


def test_fwd_must_return_a_tensor_and_residuals() -> None:
    @tg.custom_vjp
    def f(x: Tensor) -> Tensor:
        return x

    f.defvjp(lambda x: (1.0, None), lambda res, g: (g,))  # type: ignore[arg-type, return-value]
    message = "`custom_vjp f`: fwd must return (output Tensor, residuals), got float as the output"
    with pytest.raises(TypeError, match=re.escape(message)):
        with Tape():
            f(tg.tensor(1.0))
