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
from collections.abc import Callable, Hashable
from typing import Any, Generic, ParamSpec, TypeVar, cast

import attrs
import numpy as np

from . import _tree
from ._flat import split
from ._replay_signature import Binding, bind, compile_guard
from ._replay_codegen import GuardFailed, compile_recording
from ._tape import _ACTIVE
from ._tensor import Tensor
from ._traced import Const, Recording, ReplayError, Ref, Template, Traced

P = ParamSpec("P")
R = TypeVar("R")


@attrs.frozen
class _Entry:
    run: Callable[..., tuple[Any, ...]]
    outputs: _tree.TreeDef
    writes_inputs: bool
    source: str
    guard: Callable[[Any], list[Any] | None] | None


class Replayed(Generic[P, R]):
    """A function that replays its recorded NumPy calls; made by `replay`."""

    def __init__(self, fn: Callable[P, R], donate_argnums: tuple[int, ...] = ()) -> None:
        self._fn = fn
        self._donate_argnums = donate_argnums
        self._cache: dict[Hashable, _Entry] = {}
        # The last signature seen, checked first by its generated guard.
        self._guard: tuple[Callable[[Any], list[Any] | None], _Entry] | None = None
        self.traces = 0
        self.replays = 0
        self.eager_calls = 0
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if _ACTIVE.get():
            raise ReplayError(
                "replay: a replayed function was called while a Tape is recording; a replay "
                "records nothing on it, so its gradients would be lost. Call it outside the "
                "tape, or open the tape inside the replayed function."
            )
        call = (args, kwargs)
        guard = self._guard
        if guard is not None:
            arrays = guard[0](call)
            if arrays is not None:
                return self._replay(guard[1], arrays, args, kwargs)
        leaves, treedef = _tree.flatten(call)
        binding = bind(leaves, treedef)
        if binding is None:  # on a device, or inside another replay's trace
            if not any(isinstance(getattr(leaf, "data", None), Traced) for leaf in leaves):
                self.eager_calls += 1
            return self._fn(*args, **kwargs)
        entry = self._cache.get(binding.key)
        if entry is None:
            result, entry = self._trace(leaves, treedef, binding)
            self._cache[binding.key] = entry
            self._guard = (entry.guard, entry) if entry.guard is not None else None
            return result
        self._guard = (entry.guard, entry) if entry.guard is not None else None
        return self._replay(entry, binding.arrays, args, kwargs)

    def _replay(self, entry: _Entry, arrays: list[Any], args: Any, kwargs: Any) -> R:
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
        self.replays += 1
        return entry.outputs.unflatten(outs)  # type: ignore[no-any-return]

    def _trace(self, leaves: list[Any], treedef: _tree.TreeDef, binding: Binding) -> tuple[R, _Entry]:
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
        args, kwargs = treedef.unflatten(traced_leaves)
        random_state = np.random.get_state(legacy=False)
        result = self._fn(*args, **kwargs)
        if not _same_random_state(random_state, np.random.get_state(legacy=False)):
            raise ReplayError(
                "replay: the function drew numbers from NumPy's global random generator "
                "(np.random.*), which a replay would freeze at this call's draw; draw them outside "
                "and pass them in as an argument"
            )
        out_leaves, out_def = _tree.flatten(result)
        outputs = [_output(recording, leaf) for leaf in out_leaves]
        # The call's own results, read before compiling: its passes rewrite the trace's values.
        values = [_value(recording, template, wrapper) for template, wrapper in outputs]
        run, source = compile_recording(
            recording, outputs, _function_name(self._fn), _safe_to_donate(recording, donated, kept_whole)
        )
        entry = _Entry(run, out_def, recording.writes_inputs, source, compile_guard(treedef, binding))
        self.traces += 1
        recording.release()
        return out_def.unflatten(values), entry

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
    """The donated input slots whose memory no argument that is not donated can reach."""
    keep = [recording.values[s] for s in kept_whole]
    return {
        s for s in donated - kept_whole
        if not any(np.may_share_memory(recording.values[s], other) for other in keep)
    }


def _fresh_tensor(data: Any) -> Tensor:
    return Tensor(data.copy())


def _same_random_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["state"]["pos"] == b["state"]["pos"] and bool(np.array_equal(a["state"]["key"], b["state"]["key"]))


def _function_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", "") or "fn"
    return "replay_" + "".join(c if c.isalnum() or c == "_" else "_" for c in name)
