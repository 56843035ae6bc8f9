"""Pytree utilities: flatten, unflatten and map over nested containers of tensors.

>>> from tapegrad import tree
>>> tree.leaves({"w": 1, "b": (2, None)})
[2, 1]
"""

from ._tree import TreeDef as TreeDef
from ._tree import flatten as flatten
from ._tree import flatten_with_paths as flatten_with_paths
from ._tree import leaves as leaves
from ._tree import map as map  # noqa: A004 - mirrors jax.tree.map
from ._tree import mismatch as mismatch
from ._tree import register as register
from ._tree import register_leaf as register_leaf
from ._tree import structure as structure
from ._tree import unflatten as unflatten
