"""Activations: ReLU is a primitive of the core (`tapegrad._core._math.relu`), GELU has a fused rule."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._core._custom_vjp import custom_vjp
from .._core._math import relu as relu
from .._core._math import tanh
from .._core._record import is_recording
from .._core._tensor import Tensor

_C = math.sqrt(2.0 / math.pi)
_K = 0.044715




def _gelu_inner(x: Any) -> Any:
    return _C * (x + _K * x * x * x)


@custom_vjp
def gelu(x: Tensor) -> Tensor:
    """GELU, tanh approximation: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    Fused for speed: the backward pass is one expression instead of a dozen
    recorded ops.
    """
    return 0.5 * x * (1 + tanh(_gelu_inner(x)))


def _gelu_fwd(x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    t = np.tanh(_gelu_inner(x.data))
    return Tensor(0.5 * x.data * (1 + t)), (x, Tensor(t))


def _gelu_bwd(res: tuple[Tensor, Tensor], g: Tensor) -> tuple[Tensor]:
    x, t = res
    if is_recording():
        # An outer tape differentiates this rule: recompute tanh from x so
        # that its dependence on x is recorded (the residual is a constant).
        t = tanh(_gelu_inner(x))
    d_inner = _C * (1 + 3 * _K * x * x)
    return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * d_inner),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)
