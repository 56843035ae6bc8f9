"""Learning-rate schedules: functions from the step count to a rate, as in optax."""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[int], float]


def constant_schedule(value: float) -> Schedule:
    """The same rate at every step."""
    return lambda count: value


def cosine_decay_schedule(init_value: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    """Cosine decay from ``init_value`` to ``alpha * init_value`` over ``decay_steps``.

    >>> s = cosine_decay_schedule(1.0, 10)
    >>> s(0), s(5), s(10), s(20)
    (1.0, 0.5, 0.0, 0.0)
    """
    if decay_steps <= 0:
        raise ValueError(f"cosine_decay_schedule: decay_steps must be positive, got {decay_steps}")

    def schedule(count: int) -> float:
        progress = min(count, decay_steps) / decay_steps
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return init_value * ((1 - alpha) * cosine + alpha)

    return schedule


def warmup_cosine_decay_schedule(
    init_value: float, peak_value: float, warmup_steps: int, decay_steps: int, end_value: float = 0.0
) -> Schedule:
    """Linear warm-up to ``peak_value``, then cosine decay to ``end_value``."""
    if not 0 <= warmup_steps < decay_steps:
        raise ValueError(
            "warmup_cosine_decay_schedule: need 0 <= warmup_steps < decay_steps, got "
            f"{warmup_steps} and {decay_steps}"
        )

    def schedule(count: int) -> float:
        if count < warmup_steps:
            return init_value + (peak_value - init_value) * count / warmup_steps
        progress = min(count - warmup_steps, decay_steps - warmup_steps) / (decay_steps - warmup_steps)
        return end_value + (peak_value - end_value) * 0.5 * (1 + math.cos(math.pi * progress))

    return schedule


def as_schedule(op: str, lr: float | Schedule) -> Schedule:
    """A schedule from a positive number or a schedule function."""
    if callable(lr):
        return lr
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
        raise ValueError(f"`{op}`: lr must be a positive number or a schedule, got {lr!r}")
    return constant_schedule(float(lr))
