"""``Module`` and the seed's layers, as thin shells over `tapegrad.nn`.

Each layer keeps its parameters as wrapper tensors and, in ``forward``, hands
their core values to the functional layer's ``apply``: one engine, two styles.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import nn
from ..backend import xp
from ._tensor import Tensor, apply_op


class Module:
    """Base class: ``forward`` computes, ``parameters()`` finds every trainable tensor.

    Children are found in attributes, and in lists, tuples and dicts held in
    attributes, in the order they were assigned (as in PyTorch).
    """

    #: Attributes `torchlike.replay` need not guard: derived from others, or fixed at construction.
    _unguarded: frozenset[str] = frozenset({"_buffers"})  # each buffer is an attribute too

    def __init__(self) -> None:
        self.training = True
        self._buffers: dict[str, Tensor | None] = {}

    def _children(self) -> Iterator[tuple[str, Any]]:
        for name, value in vars(self).items():
            if name.startswith("_"):
                continue
            yield name, value

    def modules(self) -> Iterator[Module]:
        """This module's direct children, in assignment order."""
        for _, value in self._children():
            if isinstance(value, Module):
                yield value
            elif isinstance(value, list | tuple):
                yield from (v for v in value if isinstance(v, Module))
            elif isinstance(value, dict):
                yield from (v for v in value.values() if isinstance(v, Module))

    def parameters(self) -> list[Tensor]:
        """Every tensor that requires grad, here and in all children, without repeats."""
        buffers = set(getattr(self, "_buffers", {}))
        found: list[Tensor] = []
        for name, value in self._children():
            if isinstance(value, Tensor) and value.requires_grad and name not in buffers:
                found.append(value)
        for child in self.modules():
            found.extend(child.parameters())
        unique: dict[int, Tensor] = {}
        for p in found:
            unique.setdefault(id(p), p)
        return list(unique.values())

    def zero_grad(self) -> None:
        """Forget the gradients of every parameter (and any recorded graph no live tensor reaches)."""
        from . import _autograd

        _autograd.release_unused()
        for p in self.parameters():
            p.grad = None

    def register_buffer(self, name: str, tensor: Tensor | None) -> None:
        """Keep a non-trainable tensor as ``self.<name>`` (never in ``parameters()``)."""
        self._buffers[name] = tensor
        setattr(self, name, tensor)

    def train(self, mode: bool = True) -> Module:
        """Set training mode here and in every child."""
        self.training = mode
        for child in self.modules():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode here and in every child."""
        return self.train(False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation; subclasses define it."""
        raise NotImplementedError(f"{type(self).__name__} must define forward()")


class Linear(Module):
    """``x @ weight + bias``; the weight is drawn from ``xp.random`` as in the seed.

    ``xp.random.seed(42)`` before building a model gives the seed's exact weights.
    """

    _unguarded = frozenset({"_buffers", "_layer"})  # the functional layer: fixed by the constructor

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self._layer = nn.Linear(in_features, out_features, bias, dtype="float64")
        scale = np.sqrt(2.0 / in_features)
        self.weight = Tensor(xp.random.randn(in_features, out_features) * scale, requires_grad=True)
        self.bias = Tensor(xp.zeros(out_features), requires_grad=True) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        """``x @ weight + bias`` through `tapegrad.nn.Linear.apply`."""
        bias = self.bias

        def run(x_: Any, w: Any, *b: Any) -> Any:
            # The seed article's engine multiplied its float32 images by float64
            # weights in float64 (NumPy's promotion). The wrapper keeps that one
            # widening, as an explicit cast, so the article's script runs
            # unchanged; nn.Linear refuses integers and narrowing.
            if x_.dtype.kind == "f" and x_.dtype.itemsize < w.dtype.itemsize:
                x_ = x_.astype(w.dtype)
            return self._layer.apply(nn.LinearParams(w, b[0] if b else None), x_)

        return apply_op(run, x, self.weight, *((bias,) if bias is not None else ()))


class ReLU(Module):
    """``max(x, 0)``, through `tapegrad.nn.relu`."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply ReLU."""
        return apply_op(nn.relu, x)


class GELU(Module):
    """GELU (tanh approximation), through `tapegrad.nn.gelu`."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply GELU."""
        return apply_op(nn.gelu, x)


class Sequential(Module):
    """Children applied in order."""

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        self.layers = list(layers)

    def forward(self, x: Any) -> Any:
        """Run each child on the previous one's output."""
        for layer in self.layers:
            x = layer(x)
        return x


class _Loss(Module):
    """A loss module: its reduction is its only setting."""

    def __init__(self, reduction: nn.Reduction = "mean") -> None:
        super().__init__()
        self.reduction: nn.Reduction = reduction


class CrossEntropyLoss(_Loss):
    """Mean softmax cross-entropy of logits against integer targets (`nn.cross_entropy`)."""

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The loss, as a 0-d tensor for ``reduction='mean'``."""
        reduction = self.reduction
        return apply_op(lambda lg, t: nn.cross_entropy(lg, t, reduction=reduction), logits, targets)


class MSELoss(_Loss):
    """Mean squared error (`nn.mse`)."""

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        """The loss."""
        reduction = self.reduction
        return apply_op(lambda p, t: nn.mse(p, t, reduction), prediction, target)


