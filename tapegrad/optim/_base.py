"""Gradient transformations, the optax way: ``(init, update)`` pairs that chain.

A transformation maps updates (at first, the gradients) to new updates and
returns its new state; it never mutates. Updates and states are pytrees with
the structure of the parameters. Internally a transformation works on the
flattened leaves (`Transform.update_leaves`), so that a chain and an
optimizer flatten the gradients once per step rather than once per stage.
When no tape records (the common case, a training step), work is done on the
raw arrays with Python float constants, in packed buffers: nothing needs
differentiating, and a NumPy float64 scalar would push float32 parameters
through float64 loops (NEP 50). When a tape records (`recording`), as in a
MAML-style loop that differentiates through an inner step, every transform
computes with tapegrad ops on Tensors instead, so that gradients flow
through the update to the parameters, the gradients and a Tensor learning
rate; the values are the raw path's. Factors that depend on the step
count (Adam's bias corrections, a scheduled learning rate) are NumPy values,
because the count is an array; they are rounded to the updates' dtype first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeAlias, TypeVar

import attrs

from .. import _tree
from .._core._tape import is_recording
from .._core._tensor import Tensor, wrap
from .._arrays._packed import flat_of, split_like
from ._schedule import Schedule as Schedule
from ._schedule import tensor_value

#: A hyperparameter: a Python number, or a 0-d floating Tensor that a tape can differentiate.
Hyper: TypeAlias = "float | Tensor"
Params: TypeAlias = Any
Updates: TypeAlias = Any
OptState: TypeAlias = Any
S = TypeVar("S")


LeafUpdate: TypeAlias = Callable[[list[Tensor], S, Params, _tree.TreeDef], tuple[list[Tensor], S]]


@attrs.frozen
class Transform(Generic[S]):
    """``init(params) -> state`` and ``update(updates, state, params) -> (updates, state)``.

    ``update_leaves(leaves, state, params, treedef)`` is the same step on the
    leaves of ``updates`` (whose structure is ``treedef``); `update` wraps it.
    Build a transformation from a pytree-level update with `Transform.from_tree_update`.
    """

    init: Callable[[Params], S]
    update_leaves: LeafUpdate[S]

    def update(self, updates: Updates, state: S, params: Params) -> tuple[Updates, S]:
        """New updates (same structure as ``updates``) and the new state."""
        leaves, treedef = _tree.flatten(updates)
        new, state = self.update_leaves(leaves, state, params, treedef)
        return treedef.unflatten(new), state

    @staticmethod
    def from_tree_update(
        init: Callable[[Params], S], update: Callable[[Updates, S, Params], tuple[Updates, S]]
    ) -> Transform[S]:
        """A transformation from optax-style ``init`` and pytree-level ``update`` functions."""

        def update_leaves(
            leaves: list[Tensor], state: S, params: Params, treedef: _tree.TreeDef
        ) -> tuple[list[Tensor], S]:
            new, state = update(treedef.unflatten(leaves), state, params)
            return leaves_matching("update", "new updates", new, treedef, leaves, "the updates"), state

        return Transform(init, update_leaves)


#: Whether a tape records now: then the transforms compute with tapegrad ops. The raw
#: path records nothing, so a gradient taken through it would miss every path through
#: the update (a silently first-order meta-gradient).
recording = is_recording


def leaves_matching(
    op: str,
    what: str,
    tree: Any,
    treedef: _tree.TreeDef,
    like: list[Any] | None = None,
    like_what: str = "the gradients",
) -> list[Any]:
    """The leaves of ``tree``, which must have structure ``treedef``.

    With ``like`` (the reference leaves), each leaf must also have its
    reference's shape: NumPy would otherwise broadcast a mismatched state or
    update silently, and the parameters would change shape.
    """
    leaves, other = _tree.flatten(tree)
    if other != treedef:
        raise ValueError(
            f"`{op}`: the {what} do not match the structure of the parameters at "
            f"{_tree.mismatch(treedef, other)}; was the optimizer state made by init() "
            "for these parameters?"
        )
    for i, (leaf, ref) in enumerate(zip(leaves, like or ())):
        if isinstance(leaf, Tensor) and isinstance(ref, Tensor) and leaf.data.shape != ref.data.shape:
            path = _tree.flatten_with_paths(tree)[0][i] or "<root>"
            raise ValueError(
                f"`{op}`: the {what} at {path} have shape {leaf.shape}, but {like_what} "
                f"there have shape {ref.shape}; was the optimizer state made by init() for "
                "these parameters?"
            )
    return leaves


def check_tensors(op: str, what: str, leaves: list[Any]) -> None:
    """Raise unless every leaf is a Tensor."""
    for leaf in leaves:
        if not isinstance(leaf, Tensor):
            raise TypeError(f"`{op}`: every leaf of the {what} must be a Tensor, got {type(leaf).__name__}")


def hyper_as(value: Hyper, dtype: Any) -> Any:
    """A hyperparameter for the recorded path: a Tensor cast (differentiably) to ``dtype``.

    A Python number is returned as it is: NumPy rounds it to the array's dtype,
    and a cast Tensor rounds the same way, so both paths see the same bits.
    """
    return value.astype(dtype) if isinstance(value, Tensor) else value


def positive(op: str, name: str, value: Hyper) -> float:
    """Validate a hyperparameter that must be a positive number (or a 0-d Tensor holding one).

    Returns its value as a Python float, for the raw path.
    """
    if isinstance(value, Tensor):
        value = tensor_value(op, name, value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"`{op}`: {name} must be a positive number, got {value!r}")
    return float(value)


def fraction(op: str, name: str, value: Hyper) -> float:
    """Validate a decay rate in ``[0, 1)`` (or a 0-d Tensor holding one); returns it as a float."""
    if isinstance(value, Tensor):
        value = tensor_value(op, name, value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"`{op}`: {name} must be in [0, 1), got {value!r}")
    return float(value)


def chain(*transforms: Transform[Any]) -> Transform[tuple[Any, ...]]:
    """Apply transformations in order; the state is the tuple of their states."""

    def init(params: Params) -> tuple[Any, ...]:
        return tuple(t.init(params) for t in transforms)

    def update_leaves(
        leaves: list[Tensor], state: tuple[Any, ...], params: Params, treedef: _tree.TreeDef
    ) -> tuple[list[Tensor], tuple[Any, ...]]:
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise ValueError(
                f"`chain`: expected a state tuple of {len(transforms)} entries from init(), got "
                f"{type(state).__name__}{f' of {len(state)}' if isinstance(state, tuple) else ''}"
            )
        new_states = []
        for t, s in zip(transforms, state):
            leaves, s = t.update_leaves(leaves, s, params, treedef)
            new_states.append(s)
        return leaves, tuple(new_states)

    return Transform(init, update_leaves)


def apply_update_leaves(params: Params, updates: list[Tensor], treedef: _tree.TreeDef) -> Params:
    """``params + updates`` for update leaves of structure ``treedef``, keeping dtypes."""
    leaves, params_def = _tree.flatten(params)
    if params_def is not treedef:
        raise ValueError(
            "`apply_updates`: the updates do not match the structure of the parameters at "
            f"{_tree.mismatch(params_def, treedef)}; was the optimizer state made by init() "
            "for these parameters?"
        )
    for i, (p, u) in enumerate(zip(leaves, updates)):
        if isinstance(p, Tensor) and p.data.shape != u.data.shape:
            path = _tree.flatten_with_paths(params)[0][i] or "<root>"
            raise ValueError(
                f"`apply_updates`: the updates at {path} have shape {u.shape}, but the parameters "
                f"there have shape {p.shape}; was the optimizer state made by init() for these "
                "parameters?"
            )
    check_tensors("apply_updates", "parameters", leaves)
    if recording():
        # `astype` is differentiable; the raw path below casts in the same way.
        return treedef.unflatten([p + u.astype(p.dtype) for p, u in zip(leaves, updates)])
    flat_p = flat_of(leaves)
    flat_u = flat_of(updates) if flat_p is not None else None
    if flat_p is not None and flat_u is not None and flat_u.dtype == flat_p.dtype:
        return treedef.unflatten(split_like(flat_p + flat_u, leaves))
    return treedef.unflatten(
        [wrap(p.data + u.data.astype(p.dtype, copy=False)) for p, u in zip(leaves, updates)]
    )


def apply_updates(params: Params, updates: Updates) -> Params:
    """``params + updates`` leaf by leaf, keeping each parameter's dtype."""
    leaves, treedef = _tree.flatten(updates)
    check_tensors("apply_updates", "updates", leaves)
    return apply_update_leaves(params, leaves, treedef)
