"""The replay's passes: rewrites of a trace's instructions that keep every value bit for bit.

Eagerly, every op returns a fresh array, and a functional update allocates a
new buffer for each result. A replay knows the whole program, so, as XLA's
buffer assignment does, it can hand an op memory that nobody will read again
through ``out=``. The values stay the same, bit for bit, because each pass
only changes *where* a result is written, never which ufunc runs on which
operands: a ufunc writes each element from the same inputs either way.

``_replayed.py`` runs the passes, in order (`_run_passes` there). Each
takes the instructions and returns new ones. They read the trace's
``values`` (by slot) for shapes, dtypes and which arrays share memory; the
two that move a result into other memory update ``values`` to match, so the
passes after them see where it now lies. What each pass recognises, as
NumPy written in the traced function:

- `drop_dead`: any call whose results nobody reads and that writes nothing.
- `write_into_concatenations`: ``flat = np.concatenate([a.reshape(-1),
  b.reshape(-1)])``, 1-d, where each piece is made by a plain ufunc call
  (``x @ w``, ``x * y``) or ``x.sum(axis=...)`` of ``flat``'s dtype. The
  pieces are then computed straight into ``flat``.
- `accumulate_into_donated`: an elementwise in-place ufunc whose other
  operand is a donated argument read for the last time (``m2 += m``, with
  ``m2`` a fresh array of ``m``'s shape and dtype). It then writes into
  ``m``, and ``m2`` lives there from then on.
- `reuse_buffers`: a plain ufunc call (``g - m``, ``np.sqrt(v)``; no
  keywords, one result) whose result has the shape and dtype of a buffer
  that is dead by then. It writes into that buffer.

An optimizer's update is one example: Adam's array-level update
(``_adam_arrays`` in ``optim/_transforms.py``) is written in these patterns,
on packed buffers (``_arrays/_packed.py``)::

    g = np.concatenate([gw.reshape(-1), gb.reshape(-1)])  # gw, gb computed into g
    m2 = g - m          # into a dead buffer of its shape and dtype, if there is one
    m2 *= 1.0 - b1      # in place already
    m2 += m             # the last read of a donated m: written into m

Other NumPy (``np.where``, ``np.clip``, ``x.ravel()`` before a
concatenation) replays bit for bit too; it just allocates as it did eagerly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from .._arrays._traced import Const, Container, Instruction, Ref, Template, slots_touched, template_slots


def _called_ufunc(ins: Instruction) -> np.ufunc | None:
    """The ufunc of a recorded ``ufunc(...)`` call with one output, else ``None``."""
    owner = getattr(ins.fn, "__self__", None)
    if ins.kind == "call" and isinstance(owner, np.ufunc) and ins.fn.__name__ == "__call__" and owner.nout == 1:
        return owner
    return None


def _ufunc_of(ins: Instruction) -> np.ufunc | None:
    """The ufunc of a plain ``ufunc(...)`` call with one new result, else ``None``."""
    if ins.kwargs or len(ins.outs) != 1 or ins.unpack:
        return None
    return _called_ufunc(ins)


def drop_dead(instructions: Sequence[Instruction], kept: set[int]) -> list[Instruction]:
    """The instructions without the dead ones: pure calls whose results nobody reads.

    ``kept`` are the slots the replay returns. A result-less instruction (a
    guard, an assignment, ``ufunc.at``) or one writing through ``out=`` has
    an effect and always stays; one recorded only for the caller
    (``for_outputs``) stays only when it touches a returned slot. Runs
    first: the other passes count a value's readers and find its last use.
    """
    needed = set(kept)
    live: list[Instruction] = []
    for ins in reversed(instructions):
        pure = ins.outs and not ins.effect
        if pure and not needed.intersection(ins.outs):
            continue
        if ins.for_outputs and not kept.intersection(slots_touched(ins)):
            continue
        live.append(ins)
        for t in ins.args:
            template_slots(t, needed)
        for _, t in ins.kwargs:
            template_slots(t, needed)
    live.reverse()
    return live


def reuse_buffers(
    instructions: Sequence[Instruction],
    values: Sequence[Any],
    fixed: set[int],
    donated: set[int] = frozenset(),  # type: ignore[assignment]
) -> list[Instruction]:
    """``instructions`` with ufunc results written into dead buffers where one fits.

    The pattern: a plain ufunc call with one result and no keywords
    (``g - m``, ``np.sqrt(v)``, ``x @ w``), whose result is a whole
    C-ordered array. It gets ``out=`` a buffer of the same shape and dtype
    whose every reader has run. An elementwise ufunc may also take an
    operand that dies at that very call (NumPy handles the exact overlap);
    a generalised ufunc such as ``matmul`` only takes memory that died
    before it. Among free buffers, a donated argument the call reads is
    taken first (``p - u`` into ``p``), so that a packed buffer ends up
    where it began. Other calls (``np.where``, ``x.sum()``) keep allocating.

    ``values`` are the trace's values by slot; ``fixed`` are slots whose
    memory must never be reused (the outputs, and the inputs that are not
    ``donated``). An output may itself be written into a dead buffer, which
    it then keeps. A donated input's buffer becomes free after its last
    reader, but only past the last guard: a guard that fails hands the
    arguments to the eager function, which must find them intact. Runs
    last, because the passes before it change which buffers live when.
    """
    groups = memory_groups(values)
    pinned = {g for s in fixed for g in groups.get(s, ())}
    donated_groups = {g for s in donated for g in groups.get(s, ())} - pinned
    last_guard = max((i for i, ins in enumerate(instructions) if ins.kind.endswith("guard")), default=-1)
    death: dict[int, int] = {}
    for i, ins in enumerate(instructions):
        for s in slots_touched(ins):
            for g in groups.get(s, ()):
                death[g] = i

    physical: dict[int, int] = {}  # group -> the slot whose memory it now uses
    free: dict[tuple[Any, ...], list[int]] = {}
    dying_at: dict[int, list[int]] = {}
    for g, d in death.items():
        if g not in pinned and _reusable(values[g]):
            dying_at.setdefault(max(d, last_guard + 1) if g in donated_groups else d, []).append(g)
    rewritten = []
    for i, ins in enumerate(instructions):
        ufunc = _ufunc_of(ins)
        out = ins.outs[0] if ufunc is not None else -1
        value = values[out] if out >= 0 else None
        # Buffers whose last reader is this op: an elementwise op may overwrite them.
        dying = [g for g in dying_at.get(i, ()) if g != out]
        if ufunc is not None and ufunc.signature is None:
            for g in dying:
                free.setdefault(_fit_key(values[g]), []).append(physical.get(g, g))
            dying = []
        if isinstance(value, np.ndarray) and _reusable(value):
            pool = free.get(_fit_key(value))
            if pool:
                buffer = _pick(pool, ins, donated)
                physical[out] = buffer
                ins = attrs.evolve(ins, kwargs=(("out", Container(tuple, (Ref(buffer),))),), effect=True)
        rewritten.append(ins)
        for g in dying:
            free.setdefault(_fit_key(values[g]), []).append(physical.get(g, g))
    return rewritten


def accumulate_into_donated(
    instructions: Sequence[Instruction], values: list[Any], fixed: set[int], donated: set[int]
) -> list[Instruction]:
    """In-place updates that finish in a donated argument's own memory.

    The pattern: ``a op= b`` (or ``ufunc(a, b, out=a)``, either operand
    order), an elementwise ufunc where ``a`` is a whole array the trace
    made and ``b`` a donated argument's whole buffer of the same shape and
    dtype, read here for the last time. That call may write into ``b``
    instead: the same ufunc on the same operands, so the same values, and
    from there on ``a`` lives where ``b`` did. For example, an optimizer's
    moment, ``m2 = g - m; m2 *= c; m2 += m``: the state is then updated where
    it lies, as PyTorch's optimizers do, and the recorded `split` of ``m2``
    into views hands back ``m``'s registered views (``_arrays/_packed.py``).

    Only when nothing could tell: past the last guard; nothing of ``b``
    returned; ``a`` neither returned nor an argument, and no view of ``a``
    made before this call and returned or read after it. Views of ``a``
    made afterwards are views of ``b``: ``values`` is updated to match.
    """
    groups = memory_groups(values)
    last_guard = max((i for i, ins in enumerate(instructions) if ins.kind.endswith("guard")), default=-1)
    defined_at = {s: i for i, ins in enumerate(instructions) for s in ins.outs}
    last_touch: dict[int, int] = {}  # by slot, and by buffer (a group's owner slot)
    for i, ins in enumerate(instructions):
        for s in slots_touched(ins):
            last_touch[s] = i
            for g in groups.get(s, ()):
                last_touch[g] = max(last_touch.get(g, -1), i)
    rename: dict[int, int] = {}
    result = []
    for i, ins in enumerate(instructions):
        if rename:
            ins = _renamed(ins, rename)
        target = _accumulation(ins, i, values, groups, fixed, donated, last_touch, last_guard, defined_at)
        if target is not None:
            a, b = target
            ins = attrs.evolve(ins, kwargs=(("out", Container(tuple, (Ref(b),))),))
            rename[a] = b
            for s, owners in list(groups.items()):
                if s != a and a in owners and defined_at.get(s, -1) > i:
                    values[s] = _view_in(values[b], values[a], values[s])
                    groups[s] = {b}
        result.append(ins)
    return result


def _accumulation(
    ins: Instruction, i: int, values: Sequence[Any], groups: dict[int, set[int]], fixed: set[int],
    donated: set[int], last_touch: dict[int, int], last_guard: int, defined_at: dict[int, int],
) -> tuple[int, int] | None:
    """``(a, b)`` if ``ins`` is ``ufunc(a, b, out=(a,))`` (either order) that may write into ``b``."""
    if i <= last_guard or ins.outs or len(ins.args) != 2 or len(ins.kwargs) != 1:
        return None
    ufunc = _called_ufunc(ins)
    if ufunc is None or ufunc.signature is not None:  # elementwise only
        return None
    name, out = ins.kwargs[0]
    if name != "out" or not (isinstance(out, Container) and len(out.items) == 1 and isinstance(out.items[0], Ref)):
        return None
    a = out.items[0].slot
    refs = [t.slot for t in ins.args if isinstance(t, Ref)]
    if len(refs) != 2 or a not in refs or refs[0] == refs[1]:
        return None
    b = refs[1] if refs[0] == a else refs[0]
    va, vb = values[a], values[b]
    if not (isinstance(va, np.ndarray) and isinstance(vb, np.ndarray) and va.shape == vb.shape
            and va.dtype == vb.dtype and _reusable(va) and _reusable(vb)):
        return None
    # b: a donated argument's own buffer, read for the last time here, none of it returned.
    if b not in donated or groups.get(b) != {b} or last_touch.get(b) != i:
        return None
    if any(b in groups.get(s, ()) for s in fixed):
        return None
    # a: a temporary the trace made; no view of it made so far is returned or read later.
    if groups.get(a) != {a} or a in fixed or a in donated or a not in defined_at:
        return None
    for s, owners in groups.items():
        if s != a and a in owners and defined_at.get(s, -1) <= i and (s in fixed or last_touch.get(s, -1) > i):
            return None
    return a, b


def _view_in(new_base: np.ndarray, old_base: np.ndarray, view: np.ndarray) -> np.ndarray:
    """The view of ``new_base`` at the place ``view`` has in ``old_base``."""
    offset = view.__array_interface__["data"][0] - old_base.__array_interface__["data"][0]
    return np.ndarray(view.shape, view.dtype, buffer=new_base, offset=offset, strides=view.strides)


def _renamed(ins: Instruction, rename: dict[int, int]) -> Instruction:
    """``ins`` with references to the renamed slots pointing at their new ones."""

    def swap(t: Template) -> Template:
        if isinstance(t, Ref):
            return Ref(rename[t.slot]) if t.slot in rename else t
        if isinstance(t, Container):
            items = tuple((k, swap(v)) for k, v in t.items) if t.kind is dict else tuple(swap(v) for v in t.items)
            return Container(t.kind, items)
        return t

    return attrs.evolve(
        ins, args=tuple(swap(t) for t in ins.args), kwargs=tuple((k, swap(t)) for k, t in ins.kwargs)
    )


def _pick(pool: list[int], ins: Instruction, donated: set[int]) -> int:
    """A buffer from ``pool``: a donated argument this op reads (``p + u`` into ``p``) if any.

    An argument's buffer comes with its registered views, which the recorded
    `split` then hands back instead of slicing new ones (``_arrays/_packed.py``).
    """
    operands = {t.slot for t in ins.args if isinstance(t, Ref)}
    for k in range(len(pool) - 1, -1, -1):
        if pool[k] in donated and pool[k] in operands:
            return pool.pop(k)
    return pool.pop()


def memory_groups(values: Sequence[Any]) -> dict[int, set[int]]:
    """For each slot holding an array, the slots of the buffers (owning arrays) it lives in.

    A view belongs to its base. A view whose base is not a traced array (an
    ``as_strided`` view's base is a NumPy stand-in object) belongs to every
    buffer whose memory it may share.
    """
    owners = {id(v): s for s, v in enumerate(values) if isinstance(v, np.ndarray) and v.base is None}
    groups: dict[int, set[int]] = {}
    for s, v in enumerate(values):
        if not isinstance(v, np.ndarray):
            continue
        root = v if v.base is None else v.base
        if id(root) in owners:
            groups[s] = {owners[id(root)]}
        else:
            groups[s] = {o for o in owners.values() if np.may_share_memory(v, values[o])}
    return groups


def _reusable(value: np.ndarray) -> bool:
    """Whether ``value`` owns plain C-ordered memory that an op could write its result into."""
    return value.base is None and value.flags.c_contiguous and value.flags.writeable


def _fit_key(value: Any) -> tuple[Any, ...]:
    return (value.shape, value.dtype)


def _part(buffer: np.ndarray, start: int, stop: int, shape: tuple[int, ...]) -> np.ndarray:
    """``buffer[start:stop]`` shaped as ``shape``: where one piece of a concatenation goes."""
    return buffer[start:stop].reshape(shape)


def write_into_concatenations(
    instructions: Sequence[Instruction], values: list[Any], kept: set[int]
) -> list[Instruction]:
    """Make the pieces of a flat concatenation write straight into it.

    The pattern: ``np.concatenate([a.reshape(-1), b.reshape(-1), ...])``
    with no keywords and a 1-d result, where each piece is made by a plain
    ufunc call (``x @ w``) or ``x.sum(axis=...)`` in the concatenation's
    dtype, appears once, and has no view but its ``reshape(-1)``. The
    replay then allocates the flat array first and has each piece computed
    into its place, as a fused optimizer does: one pass over the pieces
    fewer. An optimizer packing fresh gradients is the example
    (``optim/_packing.py``). A piece read elsewhere too (or returned) then
    shares memory with the flat array, so the rewrite is skipped when
    anything writes into either afterwards, or when a piece and the flat
    array are both returned. ``values`` is updated to match.
    """
    readers: dict[int, int] = {}
    defined_at: dict[int, int] = {}
    for i, ins in enumerate(instructions):
        for s in ins.outs:
            defined_at[s] = i
        for s in slots_touched(ins) - set(ins.outs):
            readers[s] = readers.get(s, 0) + 1
    dropped: set[int] = set()
    before: dict[int, list[Instruction]] = {}
    replaced: dict[int, Instruction] = {}
    claimed: set[int] = set()  # producers already writing into an earlier concatenation
    for i, ins in enumerate(instructions):
        plan = _concatenation_plan(ins, instructions, values, readers, defined_at)
        if plan is None or claimed.intersection(p for p, _ in plan):
            continue
        if _shared_after(i, plan, instructions, values, kept):
            continue
        claimed.update(p for p, _ in plan)
        out = ins.outs[0]
        flat = values[out]
        first = min(defined_at[p] for p, _ in plan)
        before.setdefault(first, []).append(
            Instruction("call", np.empty, (Const(flat.shape), Const(flat.dtype)), outs=(out,))
        )
        start = 0
        for producer, reshape_at in plan:
            piece = values[producer]
            stop = start + piece.size
            view_slot = len(values)
            values.append(flat[start:stop].reshape(piece.shape))
            values[producer] = values[view_slot]
            at = defined_at[producer]
            before.setdefault(at, []).append(Instruction(
                "call", _part, (Ref(out), Const(start), Const(stop), Const(piece.shape)),
                outs=(view_slot,),
            ))
            target: Template = Ref(view_slot)
            if instructions[at].kind == "call":  # a ufunc takes its outputs as a tuple
                target = Container(tuple, (target,))
            replaced[at] = attrs.evolve(
                instructions[at], kwargs=(*instructions[at].kwargs, ("out", target)), effect=True
            )
            dropped.add(reshape_at)
            start = stop
        dropped.add(i)
    if not dropped:
        return list(instructions)
    result: list[Instruction] = []
    for i, ins in enumerate(instructions):
        result.extend(before.get(i, ()))
        if i not in dropped:
            result.append(replaced.get(i, ins))
    return result


def _shared_after(
    at: int,
    plan: list[tuple[int, int]],
    instructions: Sequence[Instruction],
    values: Sequence[Any],
    kept: set[int],
) -> bool:
    """Whether sharing memory between the pieces and the concatenation at ``at`` could show.

    Eagerly the pieces and the concatenation are separate arrays. Shared,
    they differ as soon as anything writes into either after the
    concatenation, or when a piece and the concatenation (or a view of it)
    are both returned.
    """
    flat = values[instructions[at].outs[0]]
    arrays = [flat, *(values[p] for p, _ in plan)]
    memory = {
        s for s, v in enumerate(values)
        if isinstance(v, np.ndarray) and any(np.may_share_memory(v, a) for a in arrays)
    }
    if any(ins.effect and slots_touched(ins) & memory for ins in instructions[at + 1:]):
        return True
    returned_piece = any(p in kept for p, _ in plan)
    returned_flat = any(isinstance(values[s], np.ndarray) and np.may_share_memory(values[s], flat) for s in kept)
    return returned_piece and returned_flat


def _concatenation_plan(
    ins: Instruction,
    instructions: Sequence[Instruction],
    values: Sequence[Any],
    readers: dict[int, int],
    defined_at: dict[int, int],
) -> list[tuple[int, int]] | None:
    """For a rewritable 1-d concatenation: each piece's producer slot and reshape index."""
    if ins.fn is not np.concatenate or ins.kwargs or len(ins.args) != 1 or len(ins.outs) != 1:
        return None
    pieces = ins.args[0]
    flat = values[ins.outs[0]]
    if not isinstance(pieces, Container) or not isinstance(flat, np.ndarray) or flat.ndim != 1:
        return None
    plan = []
    for item in pieces.items:
        if not isinstance(item, Ref) or readers.get(item.slot) != 1 or item.slot not in defined_at:
            return None
        reshape_at = defined_at[item.slot]
        reshape = instructions[reshape_at]
        if reshape.kind != "method" or reshape.fn != "reshape" or len(reshape.args) != 2:
            return None
        source, size = reshape.args
        if not isinstance(source, Ref) or not (isinstance(size, Const) and size.value == -1):
            return None
        producer = source.slot
        value = values[producer]
        if (
            producer not in defined_at or not isinstance(value, np.ndarray)
            or value.dtype != flat.dtype or not _reusable(value)
        ):
            return None
        made_by = instructions[defined_at[producer]]
        is_sum = made_by.kind == "method" and made_by.fn == "sum" and all(k == "axis" for k, _ in made_by.kwargs)
        if _ufunc_of(made_by) is None and not is_sum:
            return None
        # A view of the piece (other than the reshape) would keep reading the
        # piece's own memory, which no longer holds it.
        if any(
            s not in (producer, item.slot) and isinstance(v, np.ndarray) and np.may_share_memory(v, value)
            for s, v in enumerate(values)
        ):
            return None
        plan.append((producer, reshape_at))
    if len({producer for producer, _ in plan}) != len(plan):  # one piece twice
        return None
    return plan
