"""Tracing NumPy calls: a duck array that computes eagerly and records each call.

`tapegrad.replay` runs a function once with every input array wrapped in a
`Traced`. A traced value holds the real array, so the function computes
exactly what it would have; every NumPy call that touches one (ufuncs and
their methods through ``__array_ufunc__``, functions through
``__array_function__``, array methods, indexing, operators) is appended to a
`Recording`, which `tapegrad._replay` turns into one straight-line function.

Nothing may leave the trace unseen, because a value that escapes would be
frozen into the replay as a constant, a silently wrong answer. So every way a
value can become a plain Python or NumPy object either raises `ReplayError`
(``float(x)``, ``x.item()``, ``np.asarray(x)``) or, for a truth test, becomes
a *guard*: the replay checks that the branch goes the same way, and if it
does not, the call runs eagerly instead.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import attrs
import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin


class ReplayError(RuntimeError):
    """A replayed function did something a recording cannot repeat faithfully."""


class ReplayConstantWarning(UserWarning):
    """A replayed function read a large array that is not one of its arguments."""


#: Constants at least this large (in elements) that the traced function reads
#: from outside its arguments get a `ReplayConstantWarning`: they are frozen
#: into the replay, which is wrong if the caller changes them between calls.
LARGE_CONSTANT_ELEMENTS = 4096

# Attributes that depend only on shape, dtype and layout, which the replay's
# cache key fixes: safe to read during a trace.
_METADATA_ATTRIBUTES = frozenset(
    {"shape", "dtype", "ndim", "size", "itemsize", "nbytes", "strides", "flags"}
)
# Attributes that are arrays computed from the value: recorded like a call.
_ARRAY_ATTRIBUTES = frozenset({"T", "mT", "real", "imag"})
# Ways out of the trace that cannot be recorded, with the fix to suggest.
_ESCAPES = {
    "item": "x.item() turns the value into a Python number",
    "tolist": "x.tolist() turns the value into Python objects",
    "tobytes": "x.tobytes() reads the raw bytes",
    "tofile": "x.tofile() writes the value out",
    "dump": "x.dump() writes the value out",
    "dumps": "x.dumps() reads the value",
    "data": "x.data exposes the raw buffer",
    "ctypes": "x.ctypes exposes the raw buffer",
}
# NumPy functions whose result is metadata, not data: computed, never recorded.
_METADATA_FUNCTIONS = frozenset(
    {np.shape, np.ndim, np.size, np.result_type, np.may_share_memory, np.shares_memory,
     np.iscomplexobj, np.isrealobj}
)
# NumPy functions whose result's *shape* depends on the values: each replay
# checks that the shape matches the trace's, or runs the call eagerly.
_VALUE_SHAPED_FUNCTIONS = frozenset(
    {np.nonzero, np.flatnonzero, np.argwhere, np.unique, np.unique_values, np.unique_counts,
     np.unique_inverse, np.unique_all, np.setdiff1d, np.intersect1d, np.union1d, np.setxor1d,
     np.bincount, np.compress, np.extract, np.trim_zeros, np.repeat, np.where, np.delete,
     np.insert,  # a boolean `obj` is a mask, like np.delete's
     np.histogram, np.histogram_bin_edges, np.histogram2d, np.histogramdd,  # bins="auto"
     np.ix_, np.roots, np.polydiv, np.linalg.lstsq}  # masks; leading zeros trimmed; residuals at full rank
)
# NumPy functions whose result's *dtype* depends on the values (complex only
# where a result is complex): each replay checks the dtype too.
_VALUE_TYPED_FUNCTIONS = frozenset(
    {np.roots, np.poly, np.real_if_close, np.linalg.eig, np.linalg.eigvals, np.emath.sqrt,
     np.emath.log, np.emath.log2, np.emath.log10, np.emath.logn, np.emath.power,
     np.emath.arccos, np.emath.arcsin, np.emath.arctanh}
)
# NumPy functions that write into their first argument instead of returning a result.
_WRITING_FUNCTIONS = frozenset(
    {np.copyto, np.put, np.place, np.putmask, np.put_along_axis, np.fill_diagonal}
)
_VALUE_SHAPED_METHODS = frozenset({"nonzero", "compress", "repeat"})
# Array methods that write into the array they are called on.
_IN_PLACE_METHODS = frozenset({"fill", "sort", "put", "partition", "resize", "setflags", "itemset"})


@attrs.frozen
class Ref:
    """A reference, inside a recorded argument, to the value in ``slot``."""

    slot: int


@attrs.frozen
class Const:
    """A recorded argument that is not traced: frozen into the replay."""

    value: Any


@attrs.frozen
class Container:
    """A list, tuple or dict argument with traced values inside."""

    kind: type
    items: tuple[Any, ...]  # templates; for a dict, (key, template) pairs


Template = Ref | Const | Container


@attrs.frozen
class Instruction:
    """One recorded step of the trace.

    ``kind`` is ``"call"`` (``fn(*args, **kwargs)``), ``"method"``
    (``args[0].<fn>(*args[1:], **kwargs)``), ``"attribute"``
    (``args[0].<fn>``), ``"getitem"``, ``"setitem"``, ``"guard"`` (the truth
    of ``args[0]`` must be ``fn``), ``"shape_guard"`` (``args[0].shape``
    must be ``fn``) or ``"dtype_guard"`` (``args[0].dtype`` must be ``fn``).
    ``outs`` are the slots the step defines: none for a statement, one for a
    value, several when a tuple result is unpacked.
    """

    kind: str
    fn: Any
    args: tuple[Template, ...]
    kwargs: tuple[tuple[str, Template], ...] = ()
    outs: tuple[int, ...] = ()
    unpack: bool = False
    #: Writes into memory it did not allocate, so it stays even when no one reads its result.
    effect: bool = False
    #: NumPy's floating-point error handling when it ran, if not the one the trace began with.
    errstate: tuple[tuple[str, str], ...] | None = None
    #: An effect that matters only to the caller: dropped unless an argument is an output.
    for_outputs: bool = False


def template_slots(template: Template, into: set[int]) -> None:
    """Add the slots a recorded argument refers to to ``into``."""
    if isinstance(template, Ref):
        into.add(template.slot)
    elif isinstance(template, Container):
        for t in template.items:
            template_slots(t[1] if template.kind is dict else t, into)


def slots_touched(ins: Instruction) -> set[int]:
    """The slots an instruction reads or defines."""
    used: set[int] = set(ins.outs)
    for t in ins.args:
        template_slots(t, used)
    for _, t in ins.kwargs:
        template_slots(t, used)
    return used


class Recording:
    """The instructions of one trace, and the values it saw (kept alive while tracing)."""

    def __init__(self) -> None:
        self.instructions: list[Instruction] = []
        self.values: list[Any] = []
        # id(raw value) -> its traced wrapper; the values list keeps the ids valid.
        self._traced_by_id: dict[int, Traced] = {}
        self.input_slots: list[int] = []
        self.writes_inputs = False
        self._errstate = _errstate()

    def traced_values(self) -> list[weakref.ref[Traced]]:
        """Weak references to every traced wrapper, to see which outlive the trace."""
        return [weakref.ref(t) for t in self._traced_by_id.values()]

    def release(self) -> None:
        """Drop the trace's values (they and their wrappers point at each other)."""
        self.values = []
        self._traced_by_id = {}
        self.instructions = []

    # ---- values --------------------------------------------------------
    def new_value(self, value: Any) -> Traced:
        """Wrap ``value`` in a new slot."""
        slot = len(self.values)
        self.values.append(value)
        traced = Traced(value, slot, self)
        self._traced_by_id[id(value)] = traced
        return traced

    def add_input(self, value: Any) -> Traced:
        """A new slot that the replayed function receives as an argument."""
        traced = self.new_value(value)
        self.input_slots.append(traced.slot)
        return traced

    def traced_of(self, value: Any) -> Traced | None:
        """The traced wrapper of a raw value seen in this trace, if any."""
        return self._traced_by_id.get(id(value))

    # ---- arguments -------------------------------------------------------
    def split(self, obj: Any) -> tuple[Any, Template]:
        """``obj`` with traced values unwrapped, and its template for the replay."""
        if type(obj) is Traced:
            self._check_same(obj)
            return obj.value, Ref(obj.slot)
        if type(obj) in (list, tuple):
            pairs = [self.split(x) for x in obj]
            if any(not isinstance(t, Const) for _, t in pairs):
                return type(obj)(v for v, _ in pairs), Container(type(obj), tuple(t for _, t in pairs))
            return obj, Const(_snapshot(obj))
        if type(obj) is dict:
            split = {k: self.split(v) for k, v in obj.items()}
            if any(not isinstance(t, Const) for _, t in split.values()):
                return ({k: v for k, (v, _) in split.items()},
                        Container(dict, tuple((k, t) for k, (_, t) in split.items())))
            return obj, Const(_snapshot(obj))
        if isinstance(obj, slice) and any(type(p) is Traced for p in (obj.start, obj.stop, obj.step)):
            _escape("a slice bound taken from a traced value")
        if isinstance(obj, np.ndarray) and obj.size >= LARGE_CONSTANT_ELEMENTS:
            warnings.warn(
                f"replay: the function reads an array of shape {obj.shape} that is not one of its "
                "arguments; it is frozen into the replay as a constant. If it changes between "
                "calls, pass it as an argument instead.",
                ReplayConstantWarning,
                stacklevel=4,
            )
        return obj, Const(_snapshot(obj))

    def _check_same(self, traced: Traced) -> None:
        if traced.recording is not self:
            raise ReplayError(
                "replay: a value traced by one replayed function reached another one's trace; "
                "replayed functions cannot call each other while tracing"
            )

    def note_write(self, target: Any) -> None:
        """Check a write into ``target``: only memory the trace owns can be written on replay."""
        if type(target) is not Traced:
            raise ReplayError(
                "replay: an operation writes its result into an array that was created "
                "without the function's traced arguments (for example by np.empty(shape)), "
                "so a replay would overwrite the same memory every call; allocate it with "
                "np.empty_like(x) from a traced array instead"
            )
        # A view of an argument writes into the argument just as well.
        if not self.writes_inputs and isinstance(target.value, np.ndarray):
            self.writes_inputs = any(
                np.may_share_memory(target.value, self.values[slot]) for slot in self.input_slots
            )

    # ---- recording -------------------------------------------------------
    def record(
        self,
        kind: str,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        compute: Callable[[tuple[Any, ...], dict[str, Any]], Any],
        for_outputs: bool = False,
    ) -> Any:
        """Run one call on the raw values, record it, and wrap what it returns.

        ``for_outputs`` marks a call made only for the caller of the replay
        (bookkeeping about arrays it returns): a replay skips it unless one
        of its traced arguments is among the outputs.
        """
        out = kwargs.get("out")
        for target in out if isinstance(out, tuple) else (out,):
            if target is not None:
                self.note_write(target)
        raw_args, arg_templates = zip(*(self.split(a) for a in args)) if args else ((), ())
        raw_kwargs: dict[str, Any] = {}
        kw_templates = []
        for name, value in kwargs.items():
            raw_kwargs[name], template = self.split(value)
            kw_templates.append((name, template))
        result = compute(tuple(raw_args), raw_kwargs)
        effect = out is not None or result is None
        if out is None and kind == "call" and isinstance(result, np.ndarray):
            # A function handed back one of its later arguments: an output given
            # positionally (np.sum(x, 0, None, buf)), written in place.
            for arg in args[1:]:
                if (arg.value if type(arg) is Traced else arg) is result:
                    self.note_write(arg)
                    effect = True
                    out = arg
        outs, wrapped, unpack = self._wrap_result(result, out)
        errstate = _errstate()
        self.instructions.append(Instruction(
            kind, fn, tuple(arg_templates), tuple(kw_templates), outs, unpack, effect,
            None if errstate == self._errstate else errstate, for_outputs,
        ))
        return wrapped

    def _wrap_result(self, result: Any, out: Any) -> tuple[tuple[int, ...], Any, bool]:
        if out is not None:
            # The result is the out= array(s): the same traced values, no new slot.
            return (), (out[0] if isinstance(out, tuple) and len(out) == 1 else out), False
        if result is None:
            return (), None, False
        if isinstance(result, tuple | list) and any(_is_data(r) for r in result):
            items = [self.new_value(r) if _is_data(r) else _unrecordable(r) for r in result]
            # A named tuple (np.linalg.svd's) takes its fields as arguments.
            rebuilt = type(result)(*items) if hasattr(result, "_fields") else type(result)(items)
            return tuple(t.slot for t in items), rebuilt, True
        if _is_data(result):
            traced = self.new_value(result)
            return (traced.slot,), traced, False
        return _unrecordable(result)

    def guard(self, traced: Traced, kind: str, expected: Any) -> None:
        """Record that the replay must see ``expected`` where the trace did."""
        self.instructions.append(Instruction(kind, expected, (Ref(traced.slot),)))


def _snapshot(obj: Any) -> Any:
    """A constant as it is now: code outside the trace may change the object later.

    Arrays are copied, and lists, tuples and dicts rebuilt around snapshots;
    anything else (numbers, dtypes, functions) is kept as it is.
    """
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if type(obj) in (list, tuple):
        return type(obj)(_snapshot(x) for x in obj)
    if type(obj) is dict:
        return {k: _snapshot(v) for k, v in obj.items()}
    return obj


def _errstate() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in np.geterr().items()))


def concrete(x: Any) -> Any:
    """The real value behind ``x``, for an error message on a path that raises.

    Reading a value would freeze it into a replay; a trace that raises is
    never replayed, so an error message may read it.
    """
    return x.value if type(x) is Traced else x


def _is_data(x: Any) -> bool:
    return isinstance(x, np.ndarray | np.generic | bool | int | float | complex)


def _unrecordable(result: Any) -> NoReturn:
    raise ReplayError(
        f"replay: a NumPy call returned a {type(result).__name__}, which a replay cannot "
        "record; run this function without replay"
    )


#: What NumPy's conversion of a traced array (``Traced.__array__``) says.
UNOWNED_ARRAY_MESSAGE = (
    "replay: a traced array was converted to a NumPy array inside a replayed function "
    "(np.asarray(x), np.array(x), tensor.numpy()), or used to index or fill an array the trace "
    "does not own (table[idx] or buf[idx] = x, where table is a constant or buf was made by "
    "np.zeros(shape)): "
    "the value would be frozen into the replay. Convert it outside the replayed function "
    "(return the array and convert it there); index a tensor (tapegrad.tensor(table)[idx]) or "
    "pass the table as an argument; allocate buffers from a traced array (np.zeros_like(x)); "
    "or run this function without replay."
)


def _escape(what: str) -> NoReturn:
    raise ReplayError(
        f"replay: {what} inside a replayed function: the value would be frozen into the "
        "replay. Do it outside the replayed function (return the array and convert it there), "
        "or run this function without replay."
    )


class Traced(NDArrayOperatorsMixin):
    """An array (or scalar) seen during a trace: the real value and its slot."""

    __slots__ = ("value", "slot", "recording", "__weakref__")
    __hash__ = object.__hash__

    def __init__(self, value: Any, slot: int, recording: Recording) -> None:
        self.value = value
        self.slot = slot
        self.recording = recording

    # ---- the NumPy protocols -------------------------------------------
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        fn = getattr(ufunc, method)
        if method == "at":  # np.add.at(a, index, b) writes into a
            self.recording.note_write(inputs[0])
        return self.recording.record("call", fn, inputs, kwargs, lambda a, k: fn(*a, **k))

    def __array_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        rec = self.recording
        if func in _METADATA_FUNCTIONS:
            raw_args = tuple(rec.split(a)[0] for a in args)
            return func(*raw_args, **{k: rec.split(v)[0] for k, v in kwargs.items()})
        if func in _WRITING_FUNCTIONS and args:
            rec.note_write(args[0])
        result = rec.record("call", func, args, kwargs, lambda a, k: func(*a, **k))
        shaped = func in _VALUE_SHAPED_FUNCTIONS and (func is not np.where or len(args) == 1)
        typed = func in _VALUE_TYPED_FUNCTIONS
        if shaped or typed:
            # A guard, not trust: a replay that computed another shape or dtype here
            # would write it into buffers planned for the trace's (broadcasting silently).
            for item in result if isinstance(result, tuple | list) else (result,):
                if type(item) is Traced:
                    if shaped:
                        rec.guard(item, "shape_guard", np.shape(item.value))
                    if typed:
                        rec.guard(item, "dtype_guard", np.result_type(item.value))
        return result

    def __array__(self, dtype: Any = None, copy: Any = None) -> NoReturn:
        # NumPy also lands here when a traced array indexes, or is written into,
        # an array the trace does not own: it converts the index or the value first.
        raise ReplayError(UNOWNED_ARRAY_MESSAGE)

    # ---- attributes and methods -------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name in _METADATA_ATTRIBUTES:
            return getattr(self.value, name)
        if name == "base":
            base = getattr(self.value, "base", None)
            return None if base is None else self.recording.traced_of(base)
        if name in _ESCAPES:
            _escape(_ESCAPES[name])
        if name in _ARRAY_ATTRIBUTES:
            return self.recording.record(
                "attribute", name, (self,), {}, lambda a, k: getattr(a[0], name)
            )
        if not name.startswith("__") and callable(getattr(np.ndarray, name, None)):
            return _Method(self, name)
        raise AttributeError(f"'Traced' object has no attribute {name!r}")

    def __getitem__(self, index: Any) -> Any:
        result = self.recording.record("getitem", None, (self, index), {}, lambda a, k: a[0][a[1]])
        if _has_boolean_mask(index):
            self.recording.guard(result, "shape_guard", np.shape(result.value))
        return result

    def __setitem__(self, index: Any, value: Any) -> None:
        self.recording.note_write(self)

        def assign(a: tuple[Any, ...], k: dict[str, Any]) -> None:
            a[0][a[1]] = a[2]

        self.recording.record("setitem", None, (self, index, value), {}, assign)

    # ---- Python protocols ----------------------------------------------------
    def __bool__(self) -> bool:
        truth = bool(self.value)
        self.recording.guard(self, "guard", truth)
        return truth

    def __len__(self) -> int:
        return len(self.value)

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self.value)):
            yield self[i]

    def __float__(self) -> NoReturn:
        _escape("float(x) of a traced value")

    def __int__(self) -> NoReturn:
        _escape("int(x) of a traced value")

    def __index__(self) -> NoReturn:
        _escape("using a traced value as a Python index")

    def __complex__(self) -> NoReturn:
        _escape("complex(x) of a traced value")

    def __contains__(self, item: Any) -> NoReturn:
        _escape("`in` on a traced value")

    def __str__(self) -> NoReturn:
        refuse_print()

    def __format__(self, spec: str) -> NoReturn:
        refuse_print()

    def __repr__(self) -> str:
        return f"Traced(shape={np.shape(self.value)}, dtype={np.result_type(self.value)}, slot={self.slot})"


def refuse_print() -> NoReturn:
    """The error for printing a traced value: it would print once, when traced."""
    raise ReplayError(
        "replay: print(), str() or format() of a traced value inside a replayed function would "
        "show the value once, when traced, and never on a replay. Use "
        "tapegrad.debug.print('loss {}', loss), which prints on every call, eager or replayed."
    )


def owned_constant(value: Any, like: Traced) -> Traced:
    """``value``, an array the trace does not own, as a read-only value of ``like``'s trace.

    A constant table indexed at traced positions (``table[idx]``) must be a
    traced value for NumPy to defer to the trace. The replay reads a
    snapshot, through a read-only view, so no reused buffer can ever be
    written over it.
    """
    return like.recording.record("call", _read_only, (value,), {}, lambda a, k: _read_only(a[0]))  # type: ignore[no-any-return]


def _read_only(value: Any) -> Any:
    """A read-only view of ``value`` (the replay's snapshot of a constant)."""
    view = value.view()
    view.flags.writeable = False
    return view


def traced_in(parts: Any) -> Traced | None:
    """The first traced value among ``parts`` (an index, or a tuple of them), if any."""
    for part in parts if isinstance(parts, tuple) else (parts,):
        if type(part) is Traced:
            return part
    return None


def traced_asarray(x: Traced) -> Traced:
    """``np.asarray`` of a traced value, recorded (a scalar result becomes a 0-d array)."""
    if isinstance(x.value, np.ndarray):
        return x
    return x.recording.record("call", np.asarray, (x,), {}, lambda a, k: np.asarray(a[0]))  # type: ignore[no-any-return]


def _has_boolean_mask(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    for part in parts:
        value = part.value if type(part) is Traced else part
        if isinstance(value, np.ndarray) and value.dtype == bool:
            return True
        if isinstance(value, list) and value and isinstance(value[0], bool):
            return True
    return False


class _Method:
    """A bound array method of a traced value, recorded when called."""

    __slots__ = ("owner", "name")

    def __init__(self, owner: Traced, name: str) -> None:
        self.owner = owner
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        name = self.name
        recording = self.owner.recording
        if name in _IN_PLACE_METHODS:
            recording.note_write(self.owner)
        result = recording.record(
            "method", name, (self.owner, *args), kwargs,
            lambda a, k: getattr(a[0], name)(*a[1:], **k),
        )
        if name in _VALUE_SHAPED_METHODS:
            for item in result if isinstance(result, tuple) else (result,):
                recording.guard(item, "shape_guard", np.shape(item.value))
        return result
