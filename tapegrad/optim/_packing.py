"""Packing: run an update once on one flat buffer per operand, not once per parameter.

This is tapegrad's version of optax's ``flatten(inner)`` and autograd's
``@unflatten_optimizer``. An update over six small parameter arrays costs six
times the Python calls of one update over their concatenation. So `map_packed`
packs each list of leaves into one flat buffer, calls an array-level update
once, and hands each result back as views shaped like the parameters. Callers
still see ordinary Tensors. The views are registered (`tapegrad._arrays._packed`),
so the next step, given them back, takes their buffer as it is, with no copy.

**How a transform opts in.** Write the raw path (no tape recording) as a
function of 1-d arrays of one dtype that returns fresh arrays, and call it
through `map_packed`::

    def rms_arrays(g, v):
        v2 = g * g
        v2 -= v
        v2 *= 1.0 - decay
        v2 += v
        direction = np.sqrt(v2)
        direction += eps
        np.divide(g, direction, out=direction)
        return direction, v2

    out, new_v = map_packed(rms_arrays, grads, vs)

When the leaves cannot share one buffer (mixed dtypes, or arrays on a GPU),
`map_packed` calls the same function once per leaf, on flattened arrays: the
values are the same either way. Never write into an argument, or into a
result after returning it: a packed buffer is never written after it is
handed out (the contract in ``_arrays/_packed.py``).

**What the replay then recognises** (`tapegrad.replay`, see ``_replay/``):

- leaves that are a packed buffer's views, in order, come into a replay as
  that one buffer, both when it binds a call and in its fast guard;
- packing freshly computed gradients (``np.concatenate`` of their
  ``reshape(-1)``) becomes the gradient ops writing straight into the buffer;
- the split into views is one recorded call, which hands back the registered
  views when the result lands in a donated buffer;
- an update written as NumPy ufuncs on whole buffers, new arrays first and
  then in place (``m2 = g - m; m2 *= c; m2 += m``), is computed in a donated
  argument's memory (the old ``m``) and into buffers that are already dead.
  Other NumPy functions (``np.where``, ``np.clip``) replay correctly too, but
  each allocates its result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .._arrays import _packed
from .._arrays._backend import HOST_ARRAYS, Array
from .._core._tensor import Tensor

#: An array-level update: 1-d arrays in, one per list of leaves; fresh 1-d arrays out.
ArrayUpdate = Callable[..., tuple[Array, ...]]


def map_packed(update: ArrayUpdate, *leaf_lists: Sequence[Tensor]) -> list[list[Tensor]]:
    """``update`` on the packed buffers of ``leaf_lists``, once; its results shaped like ``leaf_lists[0]``.

    Each list holds one leaf per parameter, in the same order (gradients,
    first moments, ...). Packed when every leaf of every list is a host
    array of one dtype; otherwise ``update`` runs once per parameter, on
    each list's leaf flattened. Returns one list of Tensors per array
    ``update`` returns (with no leaves, ``update`` runs on empty arrays to
    say how many).
    """
    like = leaf_lists[0]
    if not like:  # no parameters: nothing to compute, but as many (empty) results as ever
        return [[] for _ in update(*(np.zeros(0) for _ in leaf_lists))]
    if _packable(leaf_lists):
        results = update(*(_flat(leaves) for leaves in leaf_lists))
        return [split_like(result, like) for result in results]
    per_leaf = [update(*(leaves[k].data.reshape(-1) for leaves in leaf_lists)) for k in range(len(like))]
    return [
        [Tensor(results[n].reshape(leaf.shape)) for results, leaf in zip(per_leaf, like)]
        for n in range(len(per_leaf[0]) if per_leaf else 0)
    ]


def _packable(leaf_lists: Sequence[Sequence[Tensor]]) -> bool:
    """Whether every leaf is a host array of the first leaf's dtype (and there is one)."""
    if not leaf_lists or not leaf_lists[0]:
        return False
    dtype = leaf_lists[0][0].data.dtype
    for leaves in leaf_lists:
        for leaf in leaves:
            array = leaf.data
            if type(array) not in HOST_ARRAYS or array.dtype != dtype:
                return False
    return True


def _flat(leaves: Sequence[Tensor]) -> Array:
    """The packable leaves' buffer: theirs if they are its registered views, else a concatenation."""
    arrays = [leaf.data for leaf in leaves]
    run = _packed.find_run(arrays, 0) if arrays[0].base is not None else None
    if run is not None and len(run[1]) == len(arrays):
        return run[0]  # type: ignore[no-any-return]
    return np.concatenate([array.reshape(-1) for array in arrays])


def flat_of(leaves: Sequence[Tensor]) -> Array | None:
    """The leaves' values as one flat array, or ``None`` if they can't share one.

    Leaves can share one buffer when they are all host arrays of one dtype.
    """
    return _flat(leaves) if _packable([leaves]) else None


def split_like(flat: Array, leaves: Sequence[Tensor]) -> list[Tensor]:
    """Registered views of ``flat`` with the shapes of ``leaves``, in order, as Tensors."""
    return [Tensor(v) for v in _packed.split(flat, tuple(leaf.data.shape for leaf in leaves))]


def pack(leaves: Sequence[Tensor]) -> list[Tensor] | None:
    """The leaves as registered views of one buffer; ``None`` if they can't share one.

    The buffer is a new concatenation unless the leaves are its views already.
    For values made one by one that an optimizer takes together next (the
    PyTorch-style wrapper's ``.grad``): the optimizer, and a replay, then see
    one buffer.
    """
    flat = flat_of(leaves)
    return None if flat is None else split_like(flat, leaves)


def zeros_like_flat(leaves: Sequence[Tensor]) -> list[Tensor] | None:
    """Zeros shaped like ``leaves``, as views of one buffer (``None`` if they can't share one)."""
    if not leaves or any(type(x.data) is not np.ndarray for x in leaves):
        return None
    dtype = leaves[0].dtype
    if any(x.dtype != dtype for x in leaves):
        return None
    return split_like(np.zeros(sum(x.size for x in leaves), dtype), leaves)
