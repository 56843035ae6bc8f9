"""Pytrees: nested containers of tensors that keep their structure through ops.

Nodes are tuples, lists, dicts (in sorted key order, as JAX does), named
tuples, ``None`` (a node with no children), frozen attrs classes, and any
class registered with `register`. Everything else is a leaf. We keep our own
small implementation rather than depending on optree because attrs classes
need a node kind of their own, and key paths in our error messages
(``['layers'][1].bias``) are part of the user experience.

Layer 2 of the package (see ``tests/import_layers.py``): it imports nothing of tapegrad and
knows no array type. Like JAX's registry, it treats anything unregistered as a leaf, and the
engine registers ``Tensor`` as a leaf itself, even though it is an attrs class.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

import operator
import threading
import weakref

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
    # How generated code can read the children: "items" (by position), "keys"
    # (a dict's), "attributes" (named by the aux data), "none", or None when
    # only the node's own flatten function knows (a class given to `register`).
    access: str | None = None


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
    tuple: _NodeType(lambda t: (t, None), lambda aux, c: tuple(c), _index_key, "items"),
    list: _NodeType(lambda t: (t, None), lambda aux, c: list(c), _index_key, "items"),
    dict: _NodeType(_flatten_dict, lambda aux, c: dict(zip(aux, c)), _dict_key, "keys"),  # type: ignore[call-overload]
    type(None): _NodeType(lambda t: ((), None), lambda aux, c: None, _index_key, "none"),
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
        node = _NodeType(lambda t: (t, fields), lambda aux, c: cls(*c), _field_key, "items")
    elif attrs.has(cls):
        fields = attrs.fields(cls)
        names = tuple(f.name for f in fields)
        get = operator.attrgetter(*names) if names else (lambda obj: ())
        if all(f.init and not f.kw_only for f in fields):
            def rebuild(aux: Hashable, c: list[Any]) -> Any:
                return cls(*c)
        else:
            aliases = tuple(f.alias for f in fields)

            def rebuild(aux: Hashable, c: list[Any]) -> Any:
                return cls(**dict(zip(aliases, c)))

        single = len(names) == 1
        node = _NodeType(
            (lambda obj: ((get(obj),), names)) if single else (lambda obj: (get(obj), names)),
            rebuild,
            _field_key,
            "attributes",
        )
    else:
        _LEAF_TYPES.add(cls)
        return None
    _NODES[cls] = node
    return node


@attrs.frozen(eq=False)
class TreeDef:
    """The structure of a pytree: node types and aux data, with leaf slots.

    Structures are interned: two equal structures are the same object, so
    comparing them (as every optimizer step does) is an identity check.
    """

    node: type | None  # None marks a leaf
    aux: Hashable
    children: tuple[TreeDef, ...]
    num_leaves: int
    # The generated rebuild function, made on first use and freed with the structure.
    _builder: Callable[[list[Any]], Any] | None = attrs.field(default=None, init=False, repr=False)

    def unflatten(self, leaves: Iterable[Any]) -> Any:
        """Rebuild a pytree of this structure from ``leaves``, in order."""
        items = leaves if isinstance(leaves, list) else list(leaves)
        if len(items) != self.num_leaves:
            raise ValueError(
                f"tree.unflatten: the structure has {self.num_leaves} leaves, got {len(items)}"
            )
        builder = self._builder
        if builder is None:
            builder = _compile_builder(self)
            object.__setattr__(self, "_builder", builder)  # a cache, not part of the value
        return builder(items)

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy or an unpickled structure is the interned one (never a second object
        # equal in value, which `==` would call different), and the cached builder,
        # a generated function, is not pickled.
        return (_restore, (self.node, self.aux, self.children))

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
_Key = tuple[type, Hashable, tuple[TreeDef, ...]]

# Interning keeps one object per structure while anything holds it (`_ALIVE`,
# weak), so identity stays a correct equality test. `_RECENT` holds the
# structures made lately strongly, so a training loop's few structures (and
# their generated builders) survive between steps; it is emptied when it
# reaches `MAX_RECENT_STRUCTURES`, so a stream of distinct structures (per-step
# dicts of metrics) is freed instead of piling up for good.
MAX_RECENT_STRUCTURES = 2048
_RECENT: dict[_Key, TreeDef] = {}
_ALIVE: weakref.WeakValueDictionary[_Key, TreeDef] = weakref.WeakValueDictionary()
_INTERN_LOCK = threading.Lock()

# One generated function per structure that rebuilds it from a list of leaves
# in a single call, instead of a recursive walk: optimizers rebuild the same
# parameter structure several times per training step (attrs generates its
# methods the same way). It is cached on the structure (`TreeDef._builder`).
_MAX_GENERATED_LEAVES = 4096


def access_of(cls: type) -> str | None:
    """How generated code can read a node's children (see `_NodeType.access`)."""
    node = _node_type(cls)
    return None if node is None else node.access


def _compile_builder(treedef: TreeDef) -> Callable[[list[Any]], Any]:
    if treedef.num_leaves > _MAX_GENERATED_LEAVES:
        return lambda items: treedef._build(iter(items))
    env: dict[str, Any] = {}
    position = 0

    def expression(t: TreeDef, depth: int) -> str:
        nonlocal position
        if depth > 64:
            raise RecursionError
        if t.node is None:
            position += 1
            return f"L[{position - 1}]"
        kids = ", ".join(expression(c, depth + 1) for c in t.children)
        if t.node is tuple:
            return f"({kids},)" if kids else "()"
        if t.node is list:
            return f"[{kids}]"
        if t.node is type(None):
            return "None"
        k = len(env)
        env[f"u{k}"] = _NODES[t.node].unflatten
        env[f"a{k}"] = t.aux
        return f"u{k}(a{k}, [{kids}])"

    try:
        source = f"def build(L):\n    return {expression(treedef, 0)}\n"
    except RecursionError:  # very deep trees keep the recursive walk
        return lambda items: treedef._build(iter(items))
    exec(source, env)  # noqa: S102 - the source is generated above, from names only
    return env["build"]  # type: ignore[no-any-return]


def _intern(node: type, aux: Hashable, children: tuple[TreeDef, ...]) -> TreeDef:
    key = (node, aux, children)
    found = _RECENT.get(key)
    if found is None:
        with _INTERN_LOCK:
            found = _ALIVE.get(key)
            if found is None:
                found = TreeDef(node, aux, children, sum(c.num_leaves for c in children))
                _ALIVE[key] = found
            if len(_RECENT) >= MAX_RECENT_STRUCTURES:
                _RECENT.clear()
            _RECENT[key] = found
    return found


def _restore(node: type | None, aux: Hashable, children: tuple[TreeDef, ...]) -> TreeDef:
    """The interned structure with these parts (how `TreeDef` is copied and unpickled)."""
    return _LEAF if node is None else _intern(node, aux, children)


def _flatten(tree: Any, leaves: list[Any]) -> TreeDef:
    cls = type(tree)
    if cls in _LEAF_TYPES:  # the common case (a Tensor), first
        leaves.append(tree)
        return _LEAF
    node = _NODES.get(cls)
    if node is None and (node := _node_type(cls)) is None:
        leaves.append(tree)
        return _LEAF
    children, aux = node.flatten(tree)
    return _intern(cls, aux, tuple([_flatten(child, leaves) for child in children]))


def _flatten_paths(tree: Any, leaves: list[Any], paths: list[str], path: str) -> TreeDef:
    node = _node_type(type(tree))
    if node is None:
        leaves.append(tree)
        paths.append(path)
        return _LEAF
    children, aux = node.flatten(tree)
    defs = tuple(
        _flatten_paths(child, leaves, paths, path + node.key(aux, i))
        for i, child in enumerate(children)
    )
    return _intern(type(tree), aux, defs)


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
    return leaves, _flatten(tree, leaves)


def flatten_with_paths(tree: Any) -> tuple[list[str], list[Any], TreeDef]:
    """Like `flatten`, plus each leaf's key path, e.g. ``['layers'][1].bias``."""
    leaves: list[Any] = []
    paths: list[str] = []
    treedef = _flatten_paths(tree, leaves, paths, "")
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
    """The key path where two structures first differ, with what differs; ``None`` if equal.

    >>> from tapegrad import tree
    >>> tree.mismatch(tree.structure({"w": 1, "b": 2}), tree.structure({"w": 1, "c": 2}))
    "<root>: dict(*, *) with keys ('b', 'w') vs dict(*, *) with keys ('c', 'w')"
    """
    if a is b:
        return None
    if a.node is not b.node or a.aux != b.aux or len(a.children) != len(b.children):
        return f"{path or '<root>'}: {_describe(a)} vs {_describe(b)}"
    node = _NODES.get(a.node) if a.node is not None else None
    for i, (ca, cb) in enumerate(zip(a.children, b.children)):
        key = node.key(a.aux, i) if node is not None else f"[{i}]"
        found = mismatch(ca, cb, path + key)
        if found is not None:
            return found
    return None


def _describe(t: TreeDef) -> str:
    if t.node is dict:  # the keys are what differs, most of the time
        return f"{t!r} with keys {t.aux!r}"
    return repr(t)


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
