"""Optimizers, as optax's ``alias.py``: `adam` and `sgd`, each a chain of transformations.

An `Optimizer` is a transformation (``_base.py``) plus the step that applies
its updates to the parameters. `adam_transform` and `sgd_transform` compose
the transformations of ``_transforms.py``; `adam` and `sgd` check their
hyperparameters and wrap those compositions.
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs

from .. import _tree
from .._core._tensor import Tensor
from ._base import Hyper, OptState, Params, Transform, apply_update_leaves, chain
from ._schedule import Schedule, as_schedule
from ._transforms import AdamState, ScaleState, TraceState, fraction, positive, scale_by_adam
from ._transforms import scale_by_learning_rate, trace

P = TypeVar("P")


@attrs.frozen
class Optimizer:
    """A transformation plus the step that applies it: pure, never mutating.

    >>> import tapegrad as tg
    >>> params = {"w": tg.tensor([1.0, -2.0])}
    >>> opt = tg.optim.adam(lr=0.1)
    >>> state = opt.init(params)
    >>> params, state = opt.update({"w": tg.tensor([0.5, -0.5])}, state, params)
    >>> params["w"]
    Tensor([ 0.9, -1.9], dtype=float32, device=cpu)
    """

    transform: Transform[Any]

    def init(self, params: Params) -> OptState:
        """The optimizer state for ``params``."""
        return self.transform.init(params)

    def update(self, grads: P, state: OptState, params: P) -> tuple[P, OptState]:
        """New parameters and new state; ``grads``, ``state`` and ``params`` are untouched.

        Under a recording tape the step is differentiable: a tape that records
        it gives gradients through the update to ``params``, to ``grads``
        (second order, as MAML needs) and to a Tensor learning rate. With no
        tape recording, the step runs on the raw arrays and records nothing.
        """
        leaves, treedef = _tree.flatten(grads)
        updates, new_state = self.transform.update_leaves(leaves, state, params, treedef)
        return apply_update_leaves(params, updates, treedef), new_state


def adam(
    lr: float | Schedule | Tensor = 1e-3, b1: Hyper = 0.9, b2: Hyper = 0.999, eps: Hyper = 1e-8
) -> Optimizer:
    """Adam (Kingma & Ba), with the seed's bias correction.

    Any hyperparameter may be a 0-d floating Tensor: a tape that records the
    update differentiates it (meta-learning a learning rate, say).
    """
    # Checked here too, so that the error names the function the user called.
    as_schedule("adam", lr)
    fraction("adam", "b1", b1)
    fraction("adam", "b2", b2)
    positive("adam", "eps", eps)
    return Optimizer(adam_transform(lr, b1, b2, eps))


def sgd(
    lr: float | Schedule | Tensor, momentum: Hyper = 0.0, nesterov: bool = False
) -> Optimizer:
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    ``lr`` and ``momentum`` may be 0-d floating Tensors, which a tape that
    records the update differentiates.
    """
    as_schedule("sgd", lr)
    fraction("sgd", "momentum", momentum)
    return Optimizer(sgd_transform(lr, momentum, nesterov))


def adam_transform(
    lr: float | Schedule | Tensor, b1: Hyper, b2: Hyper, eps: Hyper
) -> Transform[tuple[AdamState, ScaleState]]:
    """Adam as a chain: Adam's direction, then the (negative) learning rate."""
    return chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(lr))


def sgd_transform(
    lr: float | Schedule | Tensor, momentum: Hyper, nesterov: bool
) -> Transform[tuple[TraceState, ScaleState]] | Transform[tuple[ScaleState]]:
    """SGD, with optional (Nesterov) momentum, as a chain."""
    # A Tensor momentum is kept even at 0: its gradient is still wanted.
    if isinstance(momentum, Tensor) or momentum:
        return chain(trace(momentum, nesterov), scale_by_learning_rate(lr))
    return chain(scale_by_learning_rate(lr))
