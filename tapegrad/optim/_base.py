"""The protocol of an optimizer, the optax way: `Transform`, `chain` and `apply_updates`.

A transformation is an ``(init, update)`` pair: it maps updates (at first,
the gradients) to new updates and returns its new state; it never mutates.
Updates and states are pytrees with the structure of the parameters.
Internally a transformation works on the flattened leaves
(`Transform.update_leaves`), so that a chain and an optimizer flatten the
gradients once per step rather than once per stage. The transformations
themselves are in ``_transforms.py``; `adam` and `sgd`, composed from them,
in ``_alias.py``.

Every transformation has two paths. When no tape records (the common case,
a training step), it works on the raw arrays with Python float constants:
nothing needs differentiating, and a NumPy float64 scalar would push float32
parameters through float64 loops (NEP 50). There it opts into packing: its
array-level update runs once on one flat buffer per operand, through
`map_packed` (``_packing.py``, whose docstring shows how, and what the replay
then recognises). When a tape records (`recording`), as in a MAML-style loop
that differentiates through an inner step, it computes with tapegrad ops on
Tensors instead, leaf by leaf, so that gradients flow through the update to
the parameters, the gradients and a Tensor hyperparameter; the values are the
raw path's. Factors that depend on the step count (Adam's bias corrections,
a scheduled learning rate) are NumPy values, because the count is an array;
they are rounded to the updates' dtype first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeAlias, TypeVar, overload

import attrs

from .. import _tree
from .._core._record import is_recording
from .._arrays._backend import Array
from .._core._tensor import Tensor
from ._packing import map_packed

#: A hyperparameter: a Python number, or a 0-d floating Tensor that a tape can differentiate.
Hyper: TypeAlias = "float | Tensor"
#: The parameters: any pytree whose leaves are Tensors (a pytree has no static type of its own).
Params: TypeAlias = Any
#: Gradients or updates: a pytree with the structure of the parameters.
Updates: TypeAlias = Any
#: An optimizer's state: its transformation's (for `adam`, ``tuple[AdamState, ScaleState]``).
#: Typed loosely on purpose: code that keeps a state as ``object`` passes it back to ``update``.
OptState: TypeAlias = Any
S = TypeVar("S")
S1 = TypeVar("S1")
S2 = TypeVar("S2")
U = TypeVar("U")
P = TypeVar("P")


LeafUpdate: TypeAlias = Callable[[list[Tensor], S, Params, _tree.TreeDef], tuple[list[Tensor], S]]


@attrs.frozen
class Transform(Generic[S]):
    """``init(params) -> state`` and ``update(updates, state, params) -> (updates, state)``.

    ``update_leaves(leaves, state, params, treedef)`` is the same step on the
    leaves of ``updates`` (whose structure is ``treedef``); `update` wraps it.
    Build a transformation from a pytree-level update with `Transform.from_tree_update`,
    or write ``update_leaves`` as the transforms of ``_transforms.py`` do: a
    recorded path in tapegrad ops, and a raw path whose array-level update
    runs through `map_packed`, which packs the leaves into one buffer.
    """

    init: Callable[[Params], S]
    update_leaves: LeafUpdate[S]

    def update(self, updates: U, state: S, params: Params) -> tuple[U, S]:
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


@overload
def chain(t1: Transform[S1], /) -> Transform[tuple[S1]]: ...
@overload
def chain(t1: Transform[S1], t2: Transform[S2], /) -> Transform[tuple[S1, S2]]: ...
@overload
def chain(*transforms: Transform[Any]) -> Transform[tuple[Any, ...]]: ...
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
    (new,) = map_packed(_add_cast, leaves, updates)
    return treedef.unflatten(new)


def _add_cast(p: Array, u: Array) -> tuple[Array]:
    """``p + u`` in ``p``'s dtype (packed, both have it already)."""
    return (p + (u if u.dtype == p.dtype else u.astype(p.dtype)),)


def apply_updates(params: P, updates: Updates) -> P:
    """``params + updates`` leaf by leaf, keeping each parameter's dtype."""
    leaves, treedef = _tree.flatten(updates)
    check_tensors("apply_updates", "updates", leaves)
    return apply_update_leaves(params, leaves, treedef)  # type: ignore[no-any-return]
