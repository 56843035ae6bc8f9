"""Layers as frozen descriptions: ``init(key) -> params``, ``apply(params, x) -> y``.

A layer holds only its hyperparameters. Its parameters are a pytree the
caller owns, so `Tape.gradient` returns gradients of exactly the same type.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import attrs
import numpy as np

from .. import random
from .._core._linalg import affine
from .._core._tensor import Tensor
from ._activations import gelu, relu

P = TypeVar("P")


class Layer(Protocol[P]):
    """What every layer offers: fresh parameters from a key, and a forward pass."""

    def init(self, key: random.Key) -> P:
        """New parameters drawn with ``key``."""
        ...

    def apply(self, params: P, x: Tensor) -> Tensor:
        """The layer's output for input ``x``."""
        ...


def _dtype_name(value: Any) -> str:
    name = str(np.dtype(value).name)
    if np.dtype(value).kind != "f":
        raise ValueError(f"layer dtype must be floating, got {name}")
    return name


@attrs.frozen
class LinearParams:
    """The parameters of `Linear`: ``weight`` is ``(in_features, out_features)``."""

    weight: Tensor
    bias: Tensor | None


@attrs.frozen
class Linear:
    """``x @ weight + bias``, with Kaiming-normal weights and zero biases, as in the seed.

    >>> import tapegrad as tg
    >>> layer = tg.nn.Linear(3, 2)
    >>> params = layer.init(tg.random.key(0))
    >>> layer.apply(params, tg.tensor([[1.0, 2.0, 3.0]])).shape
    (1, 2)
    """

    in_features: int
    out_features: int
    bias: bool = True
    dtype: str = attrs.field(default="float32", converter=_dtype_name)

    def init(self, key: random.Key) -> LinearParams:
        """Weights ``N(0, 2 / in_features)``, biases zero."""
        scale = math.sqrt(2.0 / self.in_features)
        w = random.normal(key, (self.in_features, self.out_features), np.float64)
        weight = Tensor((w.data * scale).astype(self.dtype))
        bias = Tensor(np.zeros(self.out_features, dtype=self.dtype)) if self.bias else None
        return LinearParams(weight, bias)

    def apply(self, params: LinearParams, x: Tensor) -> Tensor:
        """``x @ weight + bias`` for ``x`` of shape ``(..., in_features)``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"Linear.apply: x must be a Tensor, got {type(x).__name__}")
        if x.data.ndim == 0 or x.data.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear({self.in_features}, {self.out_features}): input has shape {x.shape}, "
                f"but its last axis must have {self.in_features} features"
            )
        if x.data.dtype != params.weight.data.dtype:
            raise TypeError(
                f"Linear({self.in_features}, {self.out_features}): input has dtype {x.dtype}, "
                f"but the weights are {params.weight.dtype}; cast it first, e.g. "
                f"x.astype('{params.weight.dtype}')"
                + (", and scale pixels: x.astype('float32') / 255" if x.dtype.kind in "iub" else "")
            )
        return affine(x, params.weight, params.bias)


@attrs.frozen
class Activation:
    """A parameter-free layer applying ``fn`` element-wise (params are ``None``)."""

    fn: Callable[[Tensor], Tensor]

    def init(self, key: random.Key) -> None:
        """No parameters."""
        return None

    def apply(self, params: None, x: Tensor) -> Tensor:
        """``fn(x)``."""
        return self.fn(x)


def ReLU() -> Activation:  # noqa: N802 - reads as a layer constructor
    """The ReLU layer: ``max(x, 0)``, one primitive of the core (a NaN stays NaN)."""
    return Activation(relu)


def GELU() -> Activation:  # noqa: N802
    """The GELU layer (tanh approximation, fused backward)."""
    return Activation(gelu)


@attrs.frozen(init=False)
class Sequential:
    """Layers applied in order; the params are the tuple of each layer's params.

    >>> import tapegrad as tg
    >>> model = tg.nn.Sequential(tg.nn.Linear(4, 3), tg.nn.ReLU(), tg.nn.Linear(3, 2))
    >>> params = model.init(tg.random.key(0))
    >>> [type(p).__name__ for p in params]
    ['LinearParams', 'NoneType', 'LinearParams']
    """

    layers: tuple[Layer[Any], ...]

    def __init__(self, *layers: Layer[Any]) -> None:
        self.__attrs_init__(tuple(layers))

    def init(self, key: random.Key) -> tuple[Any, ...]:
        """Each layer's params, from its own split of ``key``."""
        keys = random.split(key, max(len(self.layers), 1))
        return tuple(layer.init(k) for layer, k in zip(self.layers, keys))

    def apply(self, params: tuple[Any, ...], x: Tensor) -> Tensor:
        """Run the layers in order."""
        if not isinstance(params, tuple) or len(params) != len(self.layers):
            raise ValueError(
                f"Sequential.apply: expected a tuple of {len(self.layers)} layer params, got "
                f"{type(params).__name__}{'' if not isinstance(params, tuple) else f' of {len(params)}'}"
            )
        for layer, p in zip(self.layers, params):
            x = layer.apply(p, x)
        return x


serial = Sequential


def MLP(  # noqa: N802
    sizes: tuple[int, ...] = (784, 128, 64, 10),
    activation: Callable[[], Activation] = ReLU,
    dtype: str = "float32",
) -> Sequential:
    """Linear layers of the given sizes with ``activation`` between them.

    The default is the seed article's MNIST model: 784 -> 128 -> 64 -> 10 with ReLU.
    """
    if len(sizes) < 2:
        raise ValueError(f"MLP: sizes needs at least an input and an output size, got {sizes}")
    layers: list[Layer[Any]] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(n_in, n_out, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(activation())
    return Sequential(*layers)
