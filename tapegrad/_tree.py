"""Pytrees: nested containers of tensors that keep their structure through ops.

Nodes are tuples, lists, dicts (in sorted key order, as JAX does), named
tuples, ``None`` (a node with no children), frozen attrs classes, and any
class registered with `register`. Everything else is a leaf. We keep our own
small implementation rather than depending on optree because attrs classes
need a node kind of their own, and key paths in our error messages
(``['layers'][1].bias``) are part of the user experience.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

import attrs

T = TypeVar("T")

Flatten = Callable[[Any], tuple[Iterable[Any], Hashable]]
Unflatten = Callable[[Hashable, list[Any]], Any]


@attrs.frozen
class _NodeType:
    flatten: Flatten
    unflatten: Unflatten
    # How one child's key reads in a path, given the node's aux data and position.
    key: Callable[[Hashable, int], str]


def _index_key(aux: Hashable, i: int) -> str:
    return f"[{i}]"


def _dict_key(aux: Hashable, i: int) -> str:
    return f"[{aux[i]!r}]"  # type: ignore[index]


def _field_key(aux: Hashable, i: int) -> str:
    return f".{aux[i]}"  # type: ignore[index]


def _flatten_dict(d: dict[Any, Any]) -> tuple[list[Any], Hashable]:
    try:
        keys = tuple(sorted(d))
    except TypeError:  # keys of mixed types keep insertion order
        keys = tuple(d)
    return [d[k] for k in keys], keys


_NODES: dict[type, _NodeType] = {
    tuple: _NodeType(lambda t: (t, None), lambda aux, c: tuple(c), _index_key),
    list: _NodeType(lambda t: (t, None), lambda aux, c: list(c), _index_key),
    dict: _NodeType(_flatten_dict, lambda aux, c: dict(zip(aux, c)), _dict_key),  # type: ignore[call-overload]
    type(None): _NodeType(lambda t: ((), None), lambda aux, c: None, _index_key),
}
_LEAF_TYPES: set[type] = set()


def register(cls: type[T], flatten: Flatten, unflatten: Unflatten) -> type[T]:
    """Make ``cls`` a pytree node.

    ``flatten(obj) -> (children, aux)`` and ``unflatten(aux, children) -> obj``;
    ``aux`` must be hashable and comparable, as it is part of the structure.
    """
    _NODES[cls] = _NodeType(flatten, unflatten, _index_key)
    _LEAF_TYPES.discard(cls)
    return cls


def register_leaf(cls: type[T]) -> type[T]:
    """Treat ``cls`` as a leaf, even if it is an attrs class (as `Tensor` is)."""
    _LEAF_TYPES.add(cls)
    _NODES.pop(cls, None)
    return cls


def _node_type(cls: type) -> _NodeType | None:
    node = _NODES.get(cls)
    if node is not None or cls in _LEAF_TYPES:
        return node
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):  # a named tuple
        fields = tuple(cls._fields)
        node = _NodeType(lambda t: (t, fields), lambda aux, c: cls(*c), _field_key)
    elif attrs.has(cls):
        names = tuple(f.name for f in attrs.fields(cls))
        aliases = tuple(f.alias for f in attrs.fields(cls))
        node = _NodeType(
            lambda obj: ([getattr(obj, n) for n in names], names),
            lambda aux, c: cls(**dict(zip(aliases, c))),
            _field_key,
        )
    else:
        _LEAF_TYPES.add(cls)
        return None
    _NODES[cls] = node
    return node


@attrs.frozen
class TreeDef:
    """The structure of a pytree: node types and aux data, with leaf slots."""

    node: type | None  # None marks a leaf
    aux: Hashable
    children: tuple[TreeDef, ...]
    num_leaves: int

    def unflatten(self, leaves: Iterable[Any]) -> Any:
        """Rebuild a pytree of this structure from ``leaves``, in order."""
        items = list(leaves)
        if len(items) != self.num_leaves:
            raise ValueError(
                f"tree.unflatten: the structure has {self.num_leaves} leaves, got {len(items)}"
            )
        return self._build(iter(items))

    def _build(self, it: Any) -> Any:
        if self.node is None:
            return next(it)
        kids = [c._build(it) for c in self.children]
        return _NODES[self.node].unflatten(self.aux, kids)

    def __repr__(self) -> str:
        if self.node is None:
            return "*"
        inner = ", ".join(repr(c) for c in self.children)
        return f"{self.node.__name__}({inner})"


_LEAF = TreeDef(None, None, (), 1)


def _flatten(tree: Any, leaves: list[Any], paths: list[str] | None, path: str) -> TreeDef:
    node = _node_type(type(tree))
    if node is None:
        leaves.append(tree)
        if paths is not None:
            paths.append(path)
        return _LEAF
    children, aux = node.flatten(tree)
    defs = []
    for i, child in enumerate(children):
        sub = path + node.key(aux, i) if paths is not None else path
        defs.append(_flatten(child, leaves, paths, sub))
    return TreeDef(type(tree), aux, tuple(defs), sum(d.num_leaves for d in defs))


def flatten(tree: Any) -> tuple[list[Any], TreeDef]:
    """The leaves of ``tree`` in order, and its structure.

    >>> from tapegrad import tree
    >>> leaves, treedef = tree.flatten({"b": [1, 2], "a": (3, None)})
    >>> leaves
    [3, 1, 2]
    >>> tree.unflatten(treedef, [x * 10 for x in leaves])
    {'a': (30, None), 'b': [10, 20]}
    """
    leaves: list[Any] = []
    return leaves, _flatten(tree, leaves, None, "")


def flatten_with_paths(tree: Any) -> tuple[list[str], list[Any], TreeDef]:
    """Like `flatten`, plus each leaf's key path, e.g. ``['layers'][1].bias``."""
    leaves: list[Any] = []
    paths: list[str] = []
    treedef = _flatten(tree, leaves, paths, "")
    return paths, leaves, treedef


def unflatten(treedef: TreeDef, leaves: Iterable[Any]) -> Any:
    """Rebuild a pytree from its structure and leaves."""
    return treedef.unflatten(leaves)


def leaves(tree: Any) -> list[Any]:
    """The leaves of ``tree``, in order."""
    return flatten(tree)[0]


def structure(tree: Any) -> TreeDef:
    """The structure of ``tree``, comparable with ``==``."""
    return flatten(tree)[1]


def mismatch(a: TreeDef, b: TreeDef, path: str = "") -> str | None:
    """The key path where two structures first differ, with what differs; ``None`` if equal."""
    if a.node is not b.node or a.aux != b.aux or len(a.children) != len(b.children):
        return f"{path or '<root>'}: {a!r} vs {b!r}"
    node = _NODES.get(a.node) if a.node is not None else None
    for i, (ca, cb) in enumerate(zip(a.children, b.children)):
        key = node.key(a.aux, i) if node is not None else f"[{i}]"
        found = mismatch(ca, cb, path + key)
        if found is not None:
            return found
    return None


def map(fn: Callable[..., Any], tree: T, *rest: Any) -> T:  # noqa: A001 - mirrors jax.tree.map
    """Apply ``fn`` leaf by leaf to ``tree`` and trees of the same structure.

    >>> from tapegrad import tree
    >>> tree.map(lambda a, b: a + b, {"x": 1, "y": [2]}, {"x": 10, "y": [20]})
    {'x': 11, 'y': [22]}
    """
    first, treedef = flatten(tree)
    others = []
    for i, other in enumerate(rest):
        leaves_i, def_i = flatten(other)
        if def_i != treedef:
            where = mismatch(treedef, def_i)
            raise ValueError(
                f"tree.map: tree {i + 1} does not match the structure of the first tree at {where}"
            )
        others.append(leaves_i)
    return treedef.unflatten(fn(*xs) for xs in zip(first, *others))  # type: ignore[no-any-return]
