"""`replay`: run a function once, record its NumPy calls, and replay them.

A training step of a small model spends most of its time in Python: the
tape, the op dispatch, the tree walks, the optimizer's bookkeeping. None of
that depends on the values, only on the shapes. So, as `jax.jit` and CUDA
graphs do, `replay` traces the function the first time it sees a new
signature (the structure of the arguments, each array's shape, dtype and
strides, and the value of every non-array leaf) and afterwards runs the
recorded NumPy calls directly, as one generated function.

The trace runs the real code on the real values, so its result is the eager
result. What a recording cannot repeat faithfully is refused with a
`ReplayError` rather than frozen into the replay (see `_traced`).
"""

from __future__ import annotations

import functools
import gc
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, NoReturn, ParamSpec, TypeVar, cast

import attrs
import numpy as np

from .. import _tree
from .._arrays._packed import split
from ._random import generator_states, reachable_generators, same_states, watch_global_random
from ._signature import Binding, bind, compile_guard
from ._codegen import GuardFailed, compile_instructions
from ._passes import accumulate_into_donated, drop_dead, reuse_buffers, write_into_concatenations
from .._core._record import active_tapes
from .._core._tensor import Tensor
from .._arrays._traced import Const, Instruction, Recording, ReplayError, Ref, Template, Traced, template_slots

P = ParamSpec("P")
R = TypeVar("R")

#: Signatures each replayed function keeps; the least recently used is dropped.
MAX_CACHED_SIGNATURES = 32
#: Traces of one function after which `ReplayRetraceWarning` says what keeps changing.
RETRACE_WARNING_AFTER = 8


class ReplayRetraceWarning(UserWarning):
    """A replayed function keeps being traced again: a static argument keeps changing."""


# Effects (`tapegrad.debug.print`) of the replay running in this thread, held
# until it has passed its last guard: a replay that falls back to the eager
# function would otherwise perform them twice.
_effects = threading.local()


def perform(effect: Callable[[], None]) -> None:
    """Perform a recorded effect now, or hold it while a replay may still fall back to eager."""
    held: list[Callable[[], None]] | None = getattr(_effects, "held", None)
    if held is None:
        effect()
    else:
        held.append(effect)


def note_effect_recorded() -> None:
    """Tell the trace running in this thread that it recorded an effect."""
    _effects.recorded = True


def tracing() -> Recording | None:
    """The recording of the trace running in this thread, if any.

    An effect whose arguments are all plain values (``debug.print("step")``)
    has no traced value to find it by, and must still be recorded.
    """
    recording: Recording | None = getattr(_effects, "recording", None)
    return recording


def _holding_effects(run: Callable[..., tuple[Any, ...]]) -> Callable[..., tuple[Any, ...]]:
    """``run``, performing its effects only once it has passed its guards (or raised otherwise)."""

    def run_holding(*arrays: Any) -> tuple[Any, ...]:
        outer = getattr(_effects, "held", None)
        held: list[Callable[[], None]] = []
        _effects.held = held
        try:
            return run(*arrays)
        except GuardFailed:
            held.clear()  # the eager rerun performs them itself
            raise
        finally:
            _effects.held = outer
            for effect in held:
                effect()

    return run_holding


@attrs.frozen
class _Entry:
    run: Callable[..., tuple[Any, ...]]
    outputs: _tree.TreeDef
    writes_inputs: bool
    source: str
    guard: Callable[[Any], list[Any] | None] | None
    #: Positions, among the replay's input arrays, of those it may overwrite (donated).
    donated: tuple[int, ...] = ()


class Replayed(Generic[P, R]):
    """A function that replays its recorded NumPy calls; made by `replay`."""

    def __init__(self, fn: Callable[P, R], donate_argnums: tuple[int, ...] = ()) -> None:
        self._fn = fn
        self._donate_argnums = donate_argnums
        self._cache: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._last_binding: Binding | None = None
        self._unchecked: list[weakref.ref[Any]] = []
        #: Set by a caller (the PyTorch-style wrapper) that first writes traced state
        #: back itself, and then calls `check_escapes`.
        self.defer_escape_check = False
        # The last signature seen, checked first by its generated guard.
        self._guard: tuple[Callable[[Any], list[Any] | None], _Entry] | None = None
        self.traces = 0
        self.replays = 0
        self.eager_calls = 0
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if active_tapes():
            raise ReplayError(
                "replay: a replayed function was called while a Tape is recording; a replay "
                "records nothing on it, so its gradients would be lost. Call it outside the "
                "tape, or open the tape inside the replayed function."
            )
        call = (args, kwargs)
        guard = self._guard
        if guard is not None:  # the last signature's generated guard: the fast path
            arrays = guard[0](call)
            if arrays is not None:
                return self._replay(guard[1], arrays, args, kwargs)
        leaves, treedef = _tree.flatten(call)
        binding = bind(leaves, treedef)  # the generic walk: the signature, and the arrays
        if binding is None:  # on a device, or inside another replay's trace
            if not any(isinstance(getattr(leaf, "data", None), Traced) for leaf in leaves):
                self.eager_calls += 1
            return self._fn(*args, **kwargs)
        entry = self._cache.get(binding.key)
        if entry is None:
            result, entry, traced = self._trace(leaves, treedef, binding)
            if self.defer_escape_check:
                self._unchecked = traced
            else:  # checked here, not through the instance: another thread may be tracing too
                _refuse_escapes(traced)
            self._cache[binding.key] = entry
            if len(self._cache) > MAX_CACHED_SIGNATURES:
                self._cache.popitem(last=False)
            self._guard = (entry.guard, entry) if entry.guard is not None else None
            self._note_retrace(call, binding)
            return result
        self._cache.move_to_end(binding.key)
        self._guard = (entry.guard, entry) if entry.guard is not None else None
        return self._replay(entry, binding.arrays, args, kwargs)

    def _note_retrace(self, call: Any, binding: Binding) -> None:
        """Warn, once, when a function keeps retracing, naming what changed last."""
        # Without its arrays: holding them would keep the traced call's inputs
        # (a model's first parameters and optimizer state) alive until the next trace.
        previous, self._last_binding = self._last_binding, attrs.evolve(binding, arrays=[])
        if self.traces != RETRACE_WARNING_AFTER or previous is None:
            return
        cause, advice = _what_changed(previous, binding, call)
        warnings.warn(
            f"replay: `{getattr(self._fn, '__name__', 'fn')}` has been traced {self.traces} "
            f"times; the last trace was caused by {cause}. {advice}",
            ReplayRetraceWarning,
            stacklevel=3,
        )

    def _replay(self, entry: _Entry, arrays: list[Any], args: Any, kwargs: Any) -> R:
        if entry.donated and not _may_overwrite(arrays, entry.donated):
            # A donated array shares memory with another argument, or is read-only:
            # writing into it would change what the function reads, or fail.
            self.eager_calls += 1
            return self._fn(*args, **kwargs)
        try:
            outs = entry.run(*arrays)
        except GuardFailed:
            if entry.writes_inputs:
                raise ReplayError(
                    "replay: the function took a different branch than when it was traced, "
                    "after writing into its arguments in place, so it cannot be rerun eagerly; "
                    "avoid in-place writes to arguments in a replayed function"
                ) from None
            self.eager_calls += 1
            return self._fn(*args, **kwargs)
        except BaseException as error:
            if entry.donated:
                bare = _consume_donated(args, self._donate_argnums)
                if bare:
                    error.add_note(
                        f"replay: the donated NumPy arrays {', '.join(bare)} may hold a partial "
                        "update: unlike a donated Tensor, a bare array cannot be marked used up. "
                        "Donate Tensors, or keep copies of the arrays you need after a failure."
                    )
            raise
        self.replays += 1
        return entry.outputs.unflatten(outs)  # type: ignore[no-any-return]

    def _trace(
        self, leaves: list[Any], treedef: _tree.TreeDef, binding: Binding
    ) -> tuple[R, _Entry, list[weakref.ref[Any]]]:
        """Run the function on traced stand-ins and compile what it did.

        The pipeline after `bind`, in order: trace (the function runs on
        `Traced` stand-ins, which fill a `Recording`), passes (`_run_passes`),
        codegen (`compile_instructions`) and guard (`compile_guard`).

        Also returns weak references to every traced value, for the caller to
        check, once this frame (which holds some of them) is gone, that none
        escaped.
        """
        flat_runs = {i: role.layout for i, role in enumerate(binding.leaves) if role.role == "buffer"}
        recording = Recording()
        traced_leaves: list[Any] = []
        stand_ins: dict[int, Any] = {}  # id(leaf) -> its traced stand-in, one per object
        donating = _donated_leaves(treedef, self._donate_argnums)
        donated: set[int] = set()
        kept_whole: set[int] = set()  # slots some argument that is not donated also reaches
        for i, leaf in enumerate(leaves):
            if id(leaf) in stand_ins:
                traced_leaves.append(stand_ins[id(leaf)])
                slot = _slot_of(stand_ins[id(leaf)])
                if slot is not None and i not in donating:
                    kept_whole.add(slot)
                continue
            data = leaf.data if type(leaf) is Tensor else leaf
            if i in flat_runs:  # one input for the whole buffer, and views of it
                layout = flat_runs[i]
                buffer = recording.add_input(data.base)
                views = split(buffer, layout)
                for leaf_k, view in zip(leaves[i:i + len(layout)], views):
                    stand_ins[id(leaf_k)] = Tensor(view) if type(leaf_k) is Tensor else view
                whole = all(k in donating for k in range(i, i + len(layout)))
                (donated if whole else kept_whole).add(buffer.slot)
            elif type(data) is np.ndarray:
                traced = recording.add_input(data)
                stand_ins[id(leaf)] = Tensor(cast(Any, traced)) if type(leaf) is Tensor else traced
                (donated if i in donating else kept_whole).add(traced.slot)
            else:
                traced_leaves.append(leaf)
                continue
            traced_leaves.append(stand_ins[id(leaf)])
        call = treedef.unflatten(traced_leaves)
        args, kwargs = call
        generators = reachable_generators(self._fn)
        states = generator_states(generators)
        # Saved and restored: a replayed function may be traced inside this trace.
        outer = getattr(_effects, "recording", None), getattr(_effects, "recorded", False)
        _effects.recording, _effects.recorded = recording, False
        try:
            with watch_global_random() as drew:
                result = self._fn(*args, **kwargs)
        finally:
            effects = _effects.recorded
            _effects.recording, _effects.recorded = outer
        _refuse_random_draws(drew(), generators, states)
        _refuse_changed_arguments(call, treedef, traced_leaves)
        out_leaves, out_def = _tree.flatten(result)
        outputs = [_output(recording, leaf) for leaf in out_leaves]
        # The call's own results, read before compiling: the passes rewrite the trace's values.
        values = [_value(recording, template, wrapper) for template, wrapper in outputs]
        safe = _safe_to_donate(recording, donated, kept_whole)
        instructions = _run_passes(recording, outputs, safe)
        run, source = compile_instructions(instructions, recording.input_slots, outputs, _function_name(self._fn))
        if effects:
            run = _holding_effects(run)
        guard = compile_guard(treedef, binding)  # None when the structure has a node it cannot check inline
        entry = _Entry(
            run, out_def, recording.writes_inputs, source, guard,
            tuple(k for k, slot in enumerate(recording.input_slots) if slot in safe),
        )
        self.traces += 1
        alive = recording.traced_values()
        recording.release()
        return out_def.unflatten(values), entry, alive

    def check_escapes(self) -> None:
        """Raise `ReplayError` if a value of the last trace outlived it without being returned."""
        traced, self._unchecked = self._unchecked, []
        _refuse_escapes(traced)

    @property
    def cache_size(self) -> int:
        """How many signatures have a recorded replay."""
        return len(self._cache)

    def sources(self) -> list[str]:
        """The generated source of each recorded replay (for debugging and profiling)."""
        return [entry.source for entry in self._cache.values()]

    def clear(self) -> None:
        """Forget every recording; the next call traces again."""
        self._cache.clear()
        self._guard = None


def replay(fn: Callable[P, R], *, donate_argnums: int | tuple[int, ...] = ()) -> Replayed[P, R]:
    """Trace ``fn`` on its first call per signature, then replay its NumPy calls.

    A signature is the structure of the arguments (any pytree), the shape,
    dtype and strides of each host array, and the value of every other leaf
    (those are static, as in ``jax.jit``: a Python number that changes every
    call retraces every call; keep counters in arrays). The function must be
    pure: it sees the world through its arguments, and arrays it reads from
    elsewhere are frozen into the replay (large ones warn with
    `ReplayConstantWarning`). Branching on a value is allowed: the replay
    checks the branch and runs the function eagerly when it differs. Turning
    a value into a Python number (``float(x)``, ``x.item()``) raises
    `ReplayError`; return the tensor instead and convert it outside.

    ``donate_argnums`` (as in ``jax.jit``) names positional arguments whose
    arrays the caller gives up: a replay may write its results into them, as
    an in-place optimizer does, instead of allocating. Only donate what you
    drop, as in ``params, state = step(params, state, x)``; a donated
    argument's old tensors hold other values after the call.

    CuPy arrays are passed straight to ``fn``, eagerly: the replay is of
    host NumPy calls.

    >>> import tapegrad as tg
    >>> @tg.replay
    ... def step(w, x):
    ...     with tg.Tape() as tape:
    ...         loss = ((x @ w) ** 2).sum()
    ...     return w - 0.1 * tape.gradient(loss, w), loss
    >>> w, x = tg.tensor([1.0, -1.0]), tg.tensor([[1.0, 2.0]])
    >>> w, loss = step(w, x)  # traced
    >>> w, loss = step(w, x)  # replayed
    >>> w, float(loss.item()), step.traces, step.replays
    (Tensor([ 1.2, -0.6], dtype=float32, device=cpu), 0.0, 1, 1)
    """
    return Replayed(fn, (donate_argnums,) if isinstance(donate_argnums, int) else tuple(donate_argnums))


def _run_passes(
    recording: Recording, outputs: list[tuple[Template, Any]], donated: set[int]
) -> list[Instruction]:
    """The trace's instructions, rewritten by the passes of ``_passes.py`` in their order.

    ``donated`` are the input slots whose memory the replay may reuse. A new
    pass is added here, in its place:

    1. `drop_dead` first: the others count a value's readers and find its
       last use, which dead calls would hide.
    2. `write_into_concatenations` next: it turns the pieces of a
       concatenation into views of it, which the memory passes must see.
    3. `accumulate_into_donated`, then `reuse_buffers` last: a result moved
       into a donated argument keeps that buffer alive longer, and
       `reuse_buffers` hands out memory by when it dies.
    """
    kept: set[int] = set()  # the returned slots: their memory is the caller's
    for template, _ in outputs:
        template_slots(template, kept)
    instructions = drop_dead(recording.instructions, kept)
    instructions = write_into_concatenations(instructions, recording.values, kept)
    fixed = kept | (set(recording.input_slots) - donated)
    instructions = accumulate_into_donated(instructions, recording.values, fixed, donated)
    return reuse_buffers(instructions, recording.values, fixed, donated)


def _output(recording: Recording, leaf: Any) -> tuple[Template, Any]:
    """How the replay produces one output leaf: a template, and the wrapper to apply."""
    if type(leaf) is Tensor:
        data: Any = leaf.data
        if type(data) is Traced:
            return Ref(data.slot), Tensor
        # Eagerly each call makes its own array; a replay copies the constant.
        return Const(data), _fresh_tensor
    if type(leaf) is Traced:
        return Ref(leaf.slot), None
    if leaf is None or isinstance(leaf, bool | int | float | complex | str):
        return Const(leaf), None
    if isinstance(leaf, np.ndarray):
        raise ReplayError(
            "replay: the function returned a NumPy array that was not computed from its "
            "arguments (for example np.zeros(...)); every replay would return that same "
            "mutable array. Wrap it in a Tensor, or compute it from an argument (np.zeros_like(x))"
        )
    # Any other object might hold traced values inside (a wrapper class, a
    # closure): freezing it would hand later calls the trace's values.
    raise ReplayError(
        f"replay: the function returned a {type(leaf).__name__} leaf, which a replay cannot "
        "rebuild; return Tensors, arrays computed from the arguments and Python scalars, in "
        "lists, tuples, dicts or registered pytree classes"
    )


def _value(recording: Recording, template: Template, wrapper: Any) -> Any:
    value = recording.values[template.slot] if isinstance(template, Ref) else template.value  # type: ignore[union-attr]
    return value if wrapper is None else wrapper(value)


def _donated_leaves(treedef: _tree.TreeDef, donate_argnums: tuple[int, ...]) -> set[int]:
    """The positions, among the flattened ``(args, kwargs)``, of the donated arguments' leaves."""
    args_def = treedef.children[0]
    positions: set[int] = set()
    start = 0
    for i, arg_def in enumerate(args_def.children):
        if i in donate_argnums:
            positions.update(range(start, start + arg_def.num_leaves))
        start += arg_def.num_leaves
    return positions


def _slot_of(stand_in: Any) -> int | None:
    data = stand_in.data if type(stand_in) is Tensor else stand_in
    return data.slot if type(data) is Traced else None


def _safe_to_donate(recording: Recording, donated: set[int], kept_whole: set[int]) -> set[int]:
    """The donated, writeable input slots whose memory no argument that is not donated can reach."""
    keep = [recording.values[s] for s in kept_whole]
    return {
        s for s in donated - kept_whole
        if recording.values[s].flags.writeable
        and not any(np.may_share_memory(recording.values[s], other) for other in keep)
    }


def _may_overwrite(arrays: list[Any], donated: tuple[int, ...]) -> bool:
    """Whether this call's donated arrays are writeable and share no memory with the others.

    The signature fixes shapes and strides, not where the memory lies: a call
    may pass one array twice under two tensors (``r(w, tg.Tensor(w.data))``).
    This runs on every replay, so arrays are grouped by the array that owns
    their memory (a view's ``base``): arrays with different owners cannot
    overlap, and only a donated array's fellow views of its owner are compared
    extent by extent (``np.may_share_memory``). Memory owned by something else
    (a buffer, a memory map) is compared with every array.
    """
    groups: dict[int, list[int]] = {}
    for i, array in enumerate(arrays):
        owner = array.base
        if owner is None:
            owner = array
        if type(owner) is not np.ndarray or not owner.flags.owndata:
            return _may_overwrite_by_extents(arrays, donated)
        groups.setdefault(id(owner), []).append(i)
    wanted = set(donated)
    for k in donated:
        if not arrays[k].flags.writeable:
            return False
    for group in groups.values():
        # Each pair of views of one owner once, where at least one of the two is donated.
        for n, k in enumerate(group):
            for j in group[n + 1:]:
                if (k in wanted or j in wanted) and np.may_share_memory(arrays[k], arrays[j]):
                    return False
    return True


def _may_overwrite_by_extents(arrays: list[Any], donated: tuple[int, ...]) -> bool:
    return all(arrays[k].flags.writeable and _alone_in_memory(arrays, k) for k in donated)


def _alone_in_memory(arrays: list[Any], k: int) -> bool:
    """Whether no other array's memory may overlap ``arrays[k]``'s."""
    mine = arrays[k]
    return not any(j != k and np.may_share_memory(mine, other) for j, other in enumerate(arrays))


class _Consumed:
    """The data of a donated tensor whose replay raised: any use raises, as in JAX."""

    __slots__ = ()

    def __getattr__(self, name: str) -> NoReturn:
        raise ReplayError(
            "replay: this tensor was donated (donate_argnums) to a replayed call that raised, "
            "so its memory may hold a partial update; it cannot be used any more. Keep the "
            "arguments you may need after a failure (or do not donate them), as with jax.jit."
        )

    def __array__(self, *args: Any, **kwargs: Any) -> NoReturn:
        self.__getattr__("__array__")

    def __repr__(self) -> str:
        return "<donated to a replayed call that raised>"


def _consume_donated(args: Any, donate_argnums: tuple[int, ...]) -> list[str]:
    """Mark every tensor of the donated arguments as used up (a failed replay may have half-written them).

    Returns where the donated bare NumPy arrays are (``args[0]['m']``), which
    cannot be marked.
    """
    consumed = _Consumed()
    bare: list[str] = []
    for i in donate_argnums:
        if i < len(args):
            paths, leaves, _ = _tree.flatten_with_paths(args[i])
            for path, leaf in zip(paths, leaves):
                if type(leaf) is Tensor:
                    object.__setattr__(leaf, "data", consumed)  # JAX deletes donated buffers alike
                elif type(leaf) is np.ndarray:
                    bare.append(f"args[{i}]{path}")
    return bare


def _refuse_random_draws(drew: str | None, generators: list[Any], states: list[Any]) -> None:
    """Refuse a trace that drew random numbers a replay would freeze at this call's draw."""
    if drew == "default_rng":
        raise ReplayError(
            "replay: the function made np.random.default_rng() without a seed, which draws "
            "different numbers on every eager call, but a replay would freeze them at this call's "
            "draw; draw them outside and pass them in as an argument (or give it a seed)"
        )
    if drew:
        raise ReplayError(
            "replay: the function drew numbers from NumPy's global random generator "
            "(np.random.*), which a replay would freeze at this call's draw; draw them outside "
            "and pass them in as an argument"
        )
    for g, before, after in zip(generators, states, generator_states(generators)):
        if not same_states(before, after):
            raise ReplayError(
                f"replay: the function drew numbers from a {type(g).__name__} that it reads from "
                "outside its arguments (a global, a closure cell or an attribute), which a replay "
                "would freeze at this call's draw; draw them outside and pass them in as an argument"
            )


def _refuse_changed_arguments(call: Any, treedef: _tree.TreeDef, traced_leaves: list[Any]) -> None:
    """Refuse a function that changed its arguments' containers (``params["w"] = ...``).

    Eagerly that updates the caller's dict; a replay passes copies of the
    containers and could never propagate the change.
    """
    paths, leaves, now = _tree.flatten_with_paths(call)
    if now == treedef and all(a is b for a, b in zip(leaves, traced_leaves)):
        return
    where = "an argument's container"
    if now == treedef:
        where = next(_argument_path(p) for p, a, b in zip(paths, leaves, traced_leaves) if a is not b)
    raise ReplayError(
        f"replay: the function changed its arguments in place ({where} was "
        "replaced, added or removed); a replay cannot carry that change to the caller's "
        "objects. Return the new value instead (e.g. `return new_params`)."
    )


def _refuse_escapes(traced: list[weakref.ref[Any]]) -> None:
    """Refuse a traced value that outlived the trace without being returned.

    It was stored by a side effect (``history.append(loss)``, an attribute):
    later calls would never update it, and reading it raises.
    """
    if not any(ref() is not None for ref in traced):
        return
    gc.collect()  # only when something looks alive: cycles may still hold it
    if any(ref() is not None for ref in traced):
        raise ReplayError(
            "replay: a value computed inside the replayed function outlived the call without "
            "being returned (it was stored by a side effect, such as history.append(loss) or "
            "self.x = y); a replay would never update it. Return it from the function and store "
            "it outside."
        )


def _fresh_tensor(data: Any) -> Tensor:
    return Tensor(data.copy())


def _argument_path(path: str) -> str:
    """A key path in ``(args, kwargs)`` as the caller writes it: ``args[0]['w']``."""
    if path.startswith("[0]"):
        return "args" + path[3:]
    return "kwargs" + path[3:] if path.startswith("[1]") else path


_STATIC_ADVICE = (
    "Python numbers and other non-array arguments are part of the signature, so a value "
    "that changes every call retraces every call: pass it as a 0-d tensor "
    "(tapegrad.tensor(value)) instead."
)
_ARRAY_ADVICE = (
    "Each array's shape, dtype and memory layout are part of the signature: pad or bucket "
    "the inputs to a few shapes, and pass contiguous arrays of one dtype."
)
_STRUCTURE_ADVICE = (
    "The arguments' structure (containers, their keys and lengths) is part of the signature: "
    "keep it the same from call to call."
)


def _what_changed(before: Binding, after: Binding, call: Any) -> tuple[str, str]:
    """Which argument made ``after`` a new signature, and what to do, in words."""
    paths, leaves, _ = _tree.flatten_with_paths(call)
    if cast(tuple[Any, ...], before.key)[0] != cast(tuple[Any, ...], after.key)[0]:
        return "a change in the structure of the arguments", _STRUCTURE_ADVICE
    for path, value, a, b in zip(paths, leaves, before.leaves, after.leaves):
        if a != b:
            if a.role == b.role == "static":
                changed = f"{_argument_path(path)} (a {type(value).__name__}, now {value!r:.40}) changing value"
                return changed, _STATIC_ADVICE
            return f"{_argument_path(path)} changing shape, dtype or memory layout", _ARRAY_ADVICE
    return "a change in an array's shape, dtype or memory layout", _ARRAY_ADVICE


def _function_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", "") or "fn"
    return "replay_" + "".join(c if c.isalnum() or c == "_" else "_" for c in name)
