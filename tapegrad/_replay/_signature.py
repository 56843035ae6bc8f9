"""What a call to a replayed function looks like: its signature, and a fast check for it.

`bind` walks the arguments' pytree and says, for each leaf, what the replay
takes from it: an array (shape, dtype and strides are part of the
signature), a whole buffer whose views run through several leaves, a repeat
of an earlier leaf, or a static value. That walk is generic and costs tens
of microseconds. So, as JAX's C++ dispatch does for a jitted function's
last signature, `compile_guard` generates one straight-line function for a
signature that checks a call against it and returns the arrays to replay
with, or ``None`` when anything differs (and the generic walk runs).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, cast

import attrs
import numpy as np

from .. import _tree
from .._arrays import _packed
from .._arrays._packed import Layout
from ._random import GENERATORS
from .._core._tensor import Tensor
from .._arrays._traced import ReplayError, Traced


@attrs.frozen
class Leaf:
    """What the replay takes from one argument leaf.

    ``role`` is ``"array"``, ``"buffer"`` (the first of ``layout``'s views of
    one buffer), ``"view"`` (a later one), ``"repeat"`` (the same object as
    leaf ``first``) or ``"static"`` (``key`` is its value's signature).
    """

    role: str
    tensor: bool = False
    key: Hashable = None
    layout: Layout = ()
    first: int = -1


@attrs.frozen
class Binding:
    """A call's signature, the arrays to replay it with, and each leaf's role."""

    key: Hashable
    arrays: list[Any]
    leaves: list[Leaf]


def bind(leaves: list[Any], treedef: _tree.TreeDef) -> Binding | None:
    """The binding of a call's leaves; ``None`` if a leaf holds a device or traced array."""
    arrays: list[Any] = []
    signature: list[Hashable] = [treedef]
    roles: list[Leaf] = []
    # The same tensor (or array) passed twice is one input, as tied weights
    # must be: which leaves repeat is part of the signature.
    first_seen: dict[int, int] = {}
    datas = [leaf.data if type(leaf) is Tensor else leaf for leaf in leaves]
    i, n = 0, len(leaves)
    while i < n:
        leaf, data = leaves[i], datas[i]
        is_tensor = type(leaf) is Tensor
        if type(data) is np.ndarray:
            seen = first_seen.setdefault(id(leaf), i)
            if seen != i:
                signature.append(seen)
                roles.append(Leaf("repeat", is_tensor, first=seen))
                i += 1
                continue
            # Views of one buffer (an optimizer's output) go in as that
            # buffer, so the replay does not concatenate them again.
            run = _packed.find_run(datas, i) if data.base is not None else None
            if run is not None and all(id(x) not in first_seen for x in leaves[i + 1:i + len(run[1])]):
                base, layout = run
                arrays.append(base)
                buffer_key = (layout, base.dtype, base.strides, is_tensor)
                signature.append(buffer_key)
                roles.append(Leaf("buffer", is_tensor, buffer_key, layout))
                for k in range(i + 1, i + len(layout)):
                    first_seen[id(leaves[k])] = k
                    roles.append(Leaf("view", type(leaves[k]) is Tensor))
                i += len(layout)
                continue
            arrays.append(data)
            # A Tensor and a raw array differ: the function may branch on which it got.
            array_key = (data.shape, data.dtype, data.strides, is_tensor)
            signature.append(array_key)
            roles.append(Leaf("array", is_tensor, array_key))
        elif type(data) is Traced or is_tensor:  # inside another trace, or on a device
            return None
        else:
            value_key = static_key(leaf)
            signature.append(value_key)
            roles.append(Leaf("static", key=value_key))
        i += 1
    return Binding(tuple(signature), arrays, roles)


# Every guard calls `static_key` on each non-array leaf of every call: the
# common kinds answer before any isinstance test, and the tests use tuples
# built once (``A | B`` builds a new union object on every evaluation).
_PLAIN_STATIC = frozenset({type(None), bool, int, str})
_FLOATS = (float, np.floating)
_COMPLEXES = (complex, np.complexfloating)


def static_key(leaf: Any) -> Hashable:
    """The signature of a leaf that is not an array: its type and value."""
    kind = type(leaf)
    if kind in _PLAIN_STATIC:
        return (kind, leaf)
    if kind is float:  # -0.0 == 0.0 and nan != nan, but neither replays as the other: compare bits
        return (float, leaf.hex())
    if isinstance(leaf, Traced):
        raise ReplayError("replay: a replayed function was called with a traced value from another trace")
    if isinstance(leaf, GENERATORS):
        # Static leaves are compared by identity: every replay would hand back the trace's draw.
        raise ReplayError(
            f"replay: an argument is a {type(leaf).__name__}; a replay would repeat the numbers it "
            "drew when traced on every call. Draw the random arrays outside the replayed function "
            "and pass them in (or pass a tapegrad.random key, which retraces per key)."
        )
    try:
        hash(leaf)
    except TypeError:
        raise ReplayError(
            f"replay: an argument leaf of type {type(leaf).__name__} is neither an array nor "
            "hashable, so it cannot be part of the replay's signature; pass arrays as Tensors "
            "and other settings as hashable values"
        ) from None
    if isinstance(leaf, _FLOATS):
        return (type(leaf), float(leaf).hex())
    if isinstance(leaf, _COMPLEXES):
        return (type(leaf), complex(leaf).real.hex(), complex(leaf).imag.hex())
    return (type(leaf), leaf)


class _Writer:
    """The source of a guard, with its constants."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        # The packed-buffer checks are `_packed`'s functions: the guard knows no registry.
        self.env: dict[str, Any] = {
            "Tensor": Tensor, "ndarray": np.ndarray, "static_key": static_key,
            "is_packed_view": _packed.is_packed_view, "view_refs": _packed.view_refs,
        }
        self.names = 0

    def const(self, value: Any) -> str:
        name = f"k{len(self.env)}"
        self.env[name] = value
        return name

    def temp(self) -> str:
        self.names += 1
        return f"t{self.names}"

    def check(self, condition: str) -> None:
        self.lines.append(f"if {condition}: return None")


def _walk(w: _Writer, treedef: _tree.TreeDef, expr: str, leaves: list[str]) -> bool:
    """Write the checks of one node; False if its kind cannot be checked inline."""
    if treedef.node is None:
        leaves.append(expr)
        return True
    node = treedef.node
    access = _tree.access_of(node)
    if access is None:
        return False
    t = w.temp()
    w.lines.append(f"{t} = {expr}")
    if node is type(None):
        w.check(f"{t} is not None")
        return True
    w.check(f"type({t}) is not {w.const(node)}")
    children = treedef.children
    if access == "items":
        w.check(f"len({t}) != {len(children)}")
        exprs = [f"{t}[{i}]" for i in range(len(children))]
    elif access == "keys":
        keys: tuple[Any, ...] = treedef.aux  # type: ignore[assignment]
        w.check(f"{t}.keys() != {w.const(set(keys))}")
        exprs = [f"{t}[{w.const(k)}]" for k in keys]
    else:  # "attributes": attrs fields, read by name
        exprs = [f"{t}.{name}" for name in treedef.aux]  # type: ignore[attr-defined]
    return all(_walk(w, child, e, leaves) for child, e in zip(children, exprs))


def compile_guard(treedef: _tree.TreeDef, binding: Binding) -> Callable[[Any], list[Any] | None] | None:
    """A function of ``(args, kwargs)`` that returns the arrays to replay with, or ``None``.

    It accepts exactly the calls `bind` would give ``binding.key``; ``None``
    when the structure has a node kind it cannot check inline.
    """
    w = _Writer()
    leaf_exprs: list[str] = []
    if not _walk(w, treedef, "call", leaf_exprs):
        return None
    arrays: list[str] = []
    objects: list[str] = []
    data = [""] * len(leaf_exprs)
    for i, (expr, role) in enumerate(zip(leaf_exprs, binding.leaves)):
        leaf = f"L{i}"
        w.lines.append(f"{leaf} = {expr}")
        if role.role == "static":
            w.check(f"static_key({leaf}) != {w.const(role.key)}")
            continue
        if role.role == "repeat":
            w.check(f"{leaf} is not L{role.first}")
            continue
        objects.append(leaf)
        if role.tensor:
            w.check(f"type({leaf}) is not Tensor")
            data[i] = f"D{i}"
            w.lines.append(f"D{i} = {leaf}.data")
        else:
            data[i] = leaf
        w.check(f"type({data[i]}) is not ndarray")
        if role.role == "array":
            shape, dtype, strides, _ = cast(tuple[Any, Any, Any, bool], role.key)
            w.check(f"{data[i]}.shape != {w.const(shape)} or {data[i]}.dtype != {w.const(dtype)} "
                    f"or {data[i]}.strides != {w.const(strides)}")
            # A view of an optimizer's buffer may begin a run that `bind` would
            # pass whole: let it decide.
            w.check(f"{data[i]}.base is not None and is_packed_view({data[i]})")
            arrays.append(data[i])
    # The views of a buffer must be exactly those registered for it, in order.
    for i, role in enumerate(binding.leaves):
        if role.role != "buffer":
            continue
        layout, dtype, strides, _ = cast(tuple[Any, Any, Any, bool], role.key)
        b, r = f"B{i}", f"W{i}"
        w.lines.append(f"{b} = {data[i]}.base")
        w.lines.append(f"{r} = view_refs({b}, {w.const(layout)})")
        w.check(f"{r} is None")
        w.check(" or ".join(f"{r}[{k}]() is not {data[i + k]}" for k in range(len(layout))))
        # A view reshaped in place (``view.shape = ...``) is no longer the buffer's: the
        # function would see the new shape, and the replay the traced one.
        w.check(" or ".join(f"{data[i + k]}.shape != {w.const(shape)}" for k, shape in enumerate(layout)))
        w.check(f"{b}.dtype != {w.const(dtype)} or {b}.strides != {w.const(strides)}")
        arrays.insert(_array_position(binding, i), b)
    # Leaves that were distinct objects when traced must still be distinct.
    if len(objects) > 1:
        w.check(f"len({{{', '.join(f'id({o})' for o in objects)}}}) != {len(objects)}")
    w.lines.append(f"return [{', '.join(arrays)}]")
    source = "def guard(call):\n" + "".join(f"    {line}\n" for line in w.lines)
    exec(compile(source, "<replay guard>", "exec"), w.env)  # noqa: S102 - our own source
    return w.env["guard"]  # type: ignore[no-any-return]


def _array_position(binding: Binding, leaf_index: int) -> int:
    """Where the array of leaf ``leaf_index`` goes among the replay's arguments."""
    return sum(1 for role in binding.leaves[:leaf_index] if role.role in ("array", "buffer"))
