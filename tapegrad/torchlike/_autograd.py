"""PyTorch's implicit graph, rebuilt on one explicit `Tape` per thread.

PyTorch records whenever a tensor that requires grad takes part in an op.
Here, such an op records on an ambient tape kept for this thread, and every
graph recorded until it closes lives on it. The tape is entered only while a
wrapper op runs (`recording`): functional tapegrad code run between wrapper
ops is never recorded on it, and `tapegrad.replay` sees no open tape. As in
PyTorch:

- ``backward()`` differentiates the graph that reaches its tensor alone, then
  frees that graph (unless ``retain_graph=True``); other graphs recorded
  meanwhile stay, so ``l1.backward(); l2.backward()`` works for two separate
  losses, and dead records of earlier graphs are never walked;
- a graph no live tensor can reach is freed by ``zero_grad()``, by the next
  wrapper op once every tensor computed on the tape has died, and whenever
  the tape has doubled since the last sweep; so a forward pass that is never
  backpropagated (an evaluation step, ``model(x).detach()``) cannot make the
  tape grow, while a loss computed before ``zero_grad()`` can still be
  backpropagated after it.

The tape closes when it holds no graph.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from .._arrays._traced import Traced
from .._core._record import Record
from .._core._tape import Tape
from .._core._tensor import Tensor as CoreTensor
from ..optim._packing import pack



class Tensor(Protocol):
    """What the graph bookkeeping needs of a wrapper tensor; ``_tensor.Tensor`` is one.

    A protocol rather than an import, so that ``_tensor.py`` (which calls this module on
    every op) and this module do not import each other.
    """

    value: CoreTensor
    requires_grad: bool
    is_leaf: bool

    @property
    def grad(self) -> object:
        """The gradient accumulated so far (``None`` before the first)."""

    def accumulate_grad(self, g: CoreTensor) -> None:
        """Add ``g`` into ``.grad``."""

NOT_RECORDED = (
    "backward(): this tensor does not require grad; it was not computed from any "
    "tensor with requires_grad=True since the last backward() or zero_grad()"
)
UPDATED_IN_PLACE = (
    "backward(): a leaf of shape {shape} that this graph read was updated in place after it was "
    "read (by `-=` and the like under no_grad(), or by optimizer.step()), so its gradient would "
    "be lost; call backward() before updating it. PyTorch refuses this too: \"one of the variables "
    "needed for gradient computation has been modified by an inplace operation\""
)
FREED = (
    "backward(): the graph behind this tensor was already freed, by an earlier backward() "
    "through it (or by torchlike.replay); compute it again, or pass retain_graph=True to the "
    "first backward(), as in PyTorch"
)


class _Live:
    """A count of live wrapper tensors computed on the tape; each one's death decrements it.

    A callback may run on any thread, at any time: it only decrements. The
    tape is swept at the start of the next wrapper op that finds it at zero, and
    a fresh counter comes with each fresh tape, so a late callback of an old
    one changes nothing.
    """

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def died(self, ref: object) -> None:
        self.n -= 1


class _Ambient(threading.local):
    def __init__(self) -> None:
        self.tape: Tape | None = None
        self.leaves: dict[int, Tensor] = {}
        # Each value a recorded op read from a leaf, by id: its leaf and the value, weakly.
        self.read: dict[int, tuple[Tensor, weakref.ref[CoreTensor]]] = {}
        self.enabled = True
        # Wrapper tensors computed on the tape, weakly: a graph stays while one of them
        # lives. (A list of plain weak references: a WeakSet costs several times more.)
        self.outputs: list[weakref.ref[Tensor]] = []
        # How many of them are alive, kept by their weak references' callbacks.
        self.live = _Live()
        # Values whose records are gone (freed), by id, weakly: a graph that reaches one
        # of them lost part of itself. Plain weak references are cheap; dead ones are
        # swept out now and then.
        self.freed: dict[int, weakref.ref[CoreTensor]] = {}
        # The tape's length at which `recording_tape` next frees the graphs nobody can reach.
        self.sweep_at = SWEEP_AT_LEAST


#: The fewest records on the ambient tape before a sweep for unreachable graphs; after a
#: sweep the next one comes when the tape has doubled, so sweeping costs O(1) per op.
SWEEP_AT_LEAST = 256


_AMBIENT = _Ambient()


def grad_enabled() -> bool:
    """False inside `no_grad`."""
    return _AMBIENT.enabled


def watch(leaf: Tensor) -> None:
    """Remember ``leaf`` for ``backward()``: a recorded op read it (its value now)."""
    _AMBIENT.leaves[id(leaf)] = leaf
    value = leaf.value
    if id(value) not in _AMBIENT.read:
        _AMBIENT.read[id(value)] = (leaf, weakref.ref(value))


def track(output: Tensor) -> None:
    """Remember a wrapper tensor computed on the tape (weakly): its graph is in use."""
    live = _AMBIENT.live
    live.n += 1
    _AMBIENT.outputs.append(weakref.ref(output, live.died))


def recording_tape() -> Tape:
    """The ambient tape, opened if no op has opened it yet, for a wrapper op to record on.

    The caller enters it around the op alone. When every wrapper tensor computed
    on it has died (a forward pass never backpropagated, ``model(x).detach()``),
    or the tape has grown past its sweep mark, the graphs that no live wrapper
    tensor can reach are freed first.
    """
    tape = _AMBIENT.tape
    if tape is not None and (_AMBIENT.live.n <= 0 or len(tape) >= _AMBIENT.sweep_at):
        release_unused()  # may close the tape (release() resets sweep_at)
        tape = _AMBIENT.tape
        if tape is not None:
            _AMBIENT.sweep_at = max(SWEEP_AT_LEAST, 2 * len(tape))
    if tape is None:
        tape = _AMBIENT.tape = Tape()
    return tape


def release() -> None:
    """Close the ambient tape, freeing every graph on it, and forget its leaves."""
    tape = _AMBIENT.tape
    if tape is not None:
        _mark_freed([t.value for t in _live_outputs()])
        _AMBIENT.tape = None
        _AMBIENT.leaves = {}
        _AMBIENT.read = {}
        _AMBIENT.outputs = []
        _AMBIENT.live = _Live()
        _AMBIENT.sweep_at = SWEEP_AT_LEAST
        tape.close()


def release_unused() -> None:
    """Free the graphs no live wrapper tensor can reach; close the tape if none is left."""
    tape = _AMBIENT.tape
    if tape is None:
        return
    live = [t.value for t in _live_outputs()]
    in_use = set(tape.graph_of(live)) if live else set()
    if not in_use:
        release()
        return
    tape.take_records([i for i in range(len(tape)) if i not in in_use])
    # Leaves no kept record reads cannot receive a gradient any more: let them go.
    read = {id(x) for record in tape.take_records(list(range(len(tape))), keep=True) for x in record[1]}
    _AMBIENT.leaves = {k: leaf for k, leaf in _AMBIENT.leaves.items() if id(leaf.value) in read}
    _AMBIENT.read = {k: entry for k, entry in _AMBIENT.read.items() if k in read}


def backward(root: Tensor, gradient: Any = None, retain_graph: bool = False) -> None:
    """Accumulate d(root)/d(leaf) into every recorded leaf's ``.grad``; then free root's graph."""
    if not root.requires_grad:
        raise RuntimeError(NOT_RECORDED)
    tape = _AMBIENT.tape
    leaves = list(_AMBIENT.leaves.values())
    if root.is_leaf and id(root) not in _AMBIENT.leaves:
        leaves.append(root)
    # Only the records that reach root: dead records of earlier graphs (a branch
    # dropped without zero_grad()) may read values an earlier backward() freed.
    indices = tape.graph_of([root.value]) if tape is not None and len(tape) else []
    # A live result keeps its graph until a backward() through it (or a replay) frees it.
    if not root.is_leaf and not indices:
        raise RuntimeError(FREED)
    records: list[Record] = []
    if tape is not None:
        records = tape.take_records(indices, keep=True)
        if _reaches_freed(records):
            raise RuntimeError(FREED)  # it shares values with a graph an earlier backward() freed
        _refuse_updated_leaves(records)
        if not retain_graph:
            if len(records) == len(tape) or _only_live_result(root):
                # The tape held this graph alone, or nothing else on it can still be
                # backpropagated (the classic loop): close it now.
                release()
                tape = None
            else:  # the graph is ours alone now: let it go as it is used
                dropped = {id(r[2]) for r in tape.take_records(indices)}
                _mark_freed([t.value for t in _live_outputs() if id(t.value) in dropped])
    # A wrapper tensor carries its core tensor in `.value`; a core tensor is taken as it is.
    seed = None if gradient is None else getattr(gradient, "value", gradient)
    sources = [leaf.value for leaf in leaves]
    # The ambient tape is entered only inside wrapper ops, so it cannot record this.
    grads: list[CoreTensor | None] = Tape.of_records(records).gradient(
        root.value, list[CoreTensor | None](sources), seed, "none"
    )
    for leaf, g in zip(leaves, _packed_if_first(leaves, grads)):
        if g is not None:
            leaf.accumulate_grad(g)


def _packed_if_first(leaves: list[Tensor], grads: list[CoreTensor | None]) -> list[CoreTensor | None]:
    """``grads`` as views of one packed buffer, while a replay traces, when they are every leaf's first.

    That is the classic loop (``zero_grad(); loss.backward(); opt.step()``) under
    `torchlike.replay`. As PyTorch's DDP keeps gradients as views of its buckets
    (``gradient_as_bucket_view``), the optimizer then updates from that buffer
    with no copy, and the replay takes the ``.grad`` arrays as one input: its
    per-call check that donated memory overlaps no other argument compares one
    array, not one per parameter. Eagerly, packing here would only move the
    optimizer's concatenation into this function, and add the making of the views.
    """
    if len(grads) < 2 or type(getattr(grads[0], "data", None)) is not Traced:
        return grads
    if any(g is None for g in grads) or any(leaf.grad is not None for leaf in leaves):
        return grads
    packed = pack([g for g in grads if g is not None])
    return grads if packed is None else list[CoreTensor | None](packed)


def _live_outputs() -> list[Tensor]:
    """The wrapper tensors computed on the tape that are still alive (the dead are forgotten)."""
    live = []
    kept = []
    for ref in _AMBIENT.outputs:
        t = ref()
        if t is not None:
            live.append(t)
            kept.append(ref)
    # A tape kept open by a live result (a validation pass) would otherwise collect a
    # reference per op for as long as it stays open.
    _AMBIENT.outputs = kept
    _AMBIENT.live.n = len(kept)  # exact again, whatever callbacks on other threads did
    return live


def _only_live_result(root: Tensor) -> bool:
    """Whether ``root`` is the only live wrapper tensor computed on the tape."""
    for ref in _AMBIENT.outputs:
        t = ref()
        if t is not None and t is not root:
            return False
    return True


def _mark_freed(values: list[CoreTensor]) -> None:
    """Remember that these values (held by live wrapper tensors) lost the records behind them."""
    freed = _AMBIENT.freed
    if len(freed) > 4096:  # sweep out the dead
        _AMBIENT.freed = freed = {k: ref for k, ref in freed.items() if ref() is not None}
    ref = weakref.ref
    for value in values:
        freed[id(value)] = ref(value)


def _reaches_freed(records: list[Record]) -> bool:
    """Whether an input of ``records`` is a value whose own record was freed."""
    freed = _AMBIENT.freed
    if not freed:
        return False
    for record in records:
        for x in record[1]:
            ref = freed.get(id(x))
            if ref is not None and ref() is x:
                return True
    return False


def _refuse_updated_leaves(records: list[Record]) -> None:
    """Raise if ``records`` read a value that its leaf no longer holds (updated in place since)."""
    read = _AMBIENT.read
    for record in records:
        for x in record[1]:
            entry = read.get(id(x))
            if entry is not None and entry[1]() is x and entry[0].value is not x:
                raise RuntimeError(UPDATED_IN_PLACE.format(shape=x.shape))


@contextmanager
def no_grad() -> Iterator[None]:
    """Record nothing inside the block, as ``torch.no_grad()``."""
    previous = _AMBIENT.enabled
    _AMBIENT.enabled = False
    try:
        yield
    finally:
        _AMBIENT.enabled = previous
