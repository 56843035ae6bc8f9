"""Learning-rate schedules: functions from the step count to a rate, as in optax.

The optimizer calls a schedule with its step count as a 0-d integer array
(data, so that a traced step replays at every count; see `tapegrad.replay`),
and a user may call one with a Python int. So the built-in schedules are
written with NumPy ops alone: no ``math.cos``, no ``min()``, and no Python
``if`` on the count, any of which would read its value out of a trace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import NDArray

from .._core._tensor import Tensor

#: What a schedule returns: a Python float, a NumPy scalar, a 0-d float array or
#: a 0-d Tensor. The optimizer never calls ``float()`` on it (see `tapegrad.replay`).
Rate: TypeAlias = "float | np.floating[Any] | NDArray[np.floating[Any]] | Tensor"

#: A function from the step count (a Python int or a 0-d integer array, which
#: indexes a list like an int) to the rate. The count is typed ``Any`` so that a
#: schedule annotated ``(count: int) -> float`` is still accepted.
Schedule: TypeAlias = Callable[[Any], Rate]


def constant_schedule(value: float | Tensor) -> Schedule:
    """The same rate at every step (a number, or a 0-d Tensor that a tape may differentiate)."""
    return lambda count: value


def cosine_decay_schedule(init_value: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    """Cosine decay from ``init_value`` to ``alpha * init_value`` over ``decay_steps``.

    >>> s = cosine_decay_schedule(1.0, 10)
    >>> [float(s(count)) for count in (0, 5, 10, 20)]
    [1.0, 0.5, 0.0, 0.0]
    """
    if decay_steps <= 0:
        raise ValueError(f"cosine_decay_schedule: decay_steps must be positive, got {decay_steps}")

    def schedule(count: Any) -> Rate:
        progress = np.minimum(count, decay_steps) / decay_steps
        cosine = 0.5 * (1 + np.cos(np.pi * progress))
        return init_value * ((1 - alpha) * cosine + alpha)  # type: ignore[no-any-return]

    return schedule


def warmup_cosine_decay_schedule(
    init_value: float, peak_value: float, warmup_steps: int, decay_steps: int, end_value: float = 0.0
) -> Schedule:
    """Linear warm-up to ``peak_value``, then cosine decay to ``end_value``.

    >>> s = warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=2, decay_steps=4)
    >>> [float(s(count)) for count in (0, 1, 2, 3, 4, 9)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    if not 0 <= warmup_steps < decay_steps:
        raise ValueError(
            "warmup_cosine_decay_schedule: need 0 <= warmup_steps < decay_steps, got "
            f"{warmup_steps} and {decay_steps}"
        )
    # Both branches are computed, and `np.where` picks one; with no warm-up the
    # first is never picked, and dividing by 1 spares it a division by zero.
    warmup_divisor = max(warmup_steps, 1)
    decay_length = decay_steps - warmup_steps

    def schedule(count: Any) -> Rate:
        warming = init_value + (peak_value - init_value) * count / warmup_divisor
        progress = np.minimum(count - warmup_steps, decay_length) / decay_length
        decaying = end_value + (peak_value - end_value) * 0.5 * (1 + np.cos(np.pi * progress))
        return np.where(count < warmup_steps, warming, decaying)  # type: ignore[no-any-return]

    return schedule


def tensor_value(op: str, name: str, value: Tensor) -> float:
    """The value of a hyperparameter given as a Tensor, which must be 0-d and floating.

    Tensors are immutable, so the value read here, once, is the value for
    good: the raw path computes with it as a Python float.
    """
    if value.ndim != 0 or value.dtype.kind != "f":
        raise ValueError(
            f"`{op}`: a Tensor {name} must be 0-d and floating, got shape {value.shape} and "
            f"dtype {value.dtype}; e.g. tg.tensor(0.1)"
        )
    return float(value)


def as_schedule(op: str, lr: float | Schedule | Tensor) -> Schedule:
    """A schedule from a positive number, a positive 0-d floating Tensor or a schedule function.

    A Tensor rate is a hyperparameter a tape can differentiate (meta-learning
    the learning rate): under a recording tape, the update reads it with
    tapegrad ops. Its value is checked here, once.
    """
    if isinstance(lr, Tensor):
        if not tensor_value(op, "lr", lr) > 0:
            raise ValueError(f"`{op}`: lr must be positive, got a Tensor holding {float(lr)!r}")
        return constant_schedule(lr)
    if callable(lr):
        return lr
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
        raise ValueError(f"`{op}`: lr must be a positive number or a schedule, got {lr!r}")
    return constant_schedule(float(lr))
