"""The gradient tape: records ops while active (``_record.py``), then runs them backwards.

Differentiation lives here, as in HIPS autograd's ``core.py``: `Tape.gradient` seeds the
target, sweeps the records in reverse calling each primitive's vector-Jacobian rule, and
accumulates cotangents in one place, where broadcasting is undone (`unbroadcast`) and every
gradient is checked against its input's shape and dtype. The tape stands above the ops: it
imports them, and they import only ``_record.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeAlias, TypeVar

import numpy as np

from .. import _tree as tree
from .._arrays._backend import array_module
from . import _anomaly
from ._math import copy
from ._record import _ACTIVE, Record, Recorder
from ._reduce import sum as _sum
from ._shape import reshape
from ._tensor import Tensor

Unconnected: TypeAlias = Literal["zero", "none", "error"]
S = TypeVar("S")

#: A persistent tape garbage-collected while it still holds more than this many
#: bytes of recorded arrays emits a `ResourceWarning`: it was probably kept by mistake.
RESOURCE_WARNING_BYTES = 16 * 1024 * 1024
_KEPT_BY_MISTAKE = (
    "Tape: a persistent tape was garbage-collected while holding {records} records "
    "({nbytes} bytes of arrays); call tape.close() once you are done with its gradients, "
    "or use Tape(persistent=False) if one gradient() call is enough"
)


def _without(tapes: tuple[Recorder, ...], tape: Tape) -> tuple[Recorder, ...]:
    return tuple(t for t in tapes if t is not tape)


class Tape(Recorder):
    """Records the ops run inside ``with Tape() as tape:`` for `gradient`.

    A tape is used once by default: `gradient` releases what it recorded as
    it goes, so memory does not grow across training steps. Pass
    ``persistent=True`` to call `gradient` many times; then `close` (or
    dropping the tape) releases the records. Dropping one that still holds
    more than `RESOURCE_WARNING_BYTES` emits a `ResourceWarning`.

    >>> import tapegrad as tg
    >>> w = tg.tensor([1.0, 2.0])
    >>> with tg.Tape() as tape:
    ...     loss = (w * w).sum()
    >>> tape.gradient(loss, {"w": w})
    {'w': Tensor([2., 4.], dtype=float32, device=cpu)}
    """

    __slots__ = ("_persistent", "_token", "_spent", "__weakref__")

    def __init__(self, persistent: bool = False) -> None:
        super().__init__()
        self._persistent = persistent
        self._token: Any = None
        self._spent = False

    # ---- recording ---------------------------------------------------------
    def __enter__(self) -> Tape:
        if self._token is not None or any(t is self for t in _ACTIVE.get()):
            raise RuntimeError(
                "Tape: this tape is already recording; a tape cannot be entered twice. "
                "Use a new Tape() for a nested computation."
            )
        if self._spent:
            raise RuntimeError(
                "Tape: this non-persistent tape was used by gradient() already; "
                "create a new Tape() for the next computation"
            )
        self._token = _ACTIVE.set((*_ACTIVE.get(), self))
        return self

    def __exit__(self, *exc: object) -> None:
        # Remove exactly this tape. Tapes can close out of order (a generator or an
        # ExitStack holding one), and resetting the variable to what it was when this
        # tape was entered would switch off tapes entered since and revive closed ones.
        _ACTIVE.set(_without(_ACTIVE.get(), self))
        self._token = None

    @contextmanager
    def _paused(self) -> Iterator[None]:
        """Leave this tape out of the active ones inside the block; other tapes go on."""
        active = _ACTIVE.get()
        if not any(t is self for t in active):
            # Not recording here (a gradient() after the block, inside its own
            # stop_recording(), or on another thread): nothing to pause, and
            # nothing to bring back at the end.
            yield
            return
        _ACTIVE.set(_without(active, self))
        try:
            yield
        finally:
            # Only this tape comes back, and only if it is still entered: tapes that
            # opened or closed inside the block keep what they did.
            active = _ACTIVE.get()
            if self._token is not None and not any(t is self for t in active):
                _ACTIVE.set((*active, self))

    @contextmanager
    def stop_recording(self) -> Iterator[None]:
        """Pause this tape (other active tapes go on recording) inside the block."""
        if not self.recording:
            raise RuntimeError("stop_recording(): this tape is not recording; use it inside `with tape:`")
        with self._paused():
            yield

    @property
    def recording(self) -> bool:
        """Whether this tape records now (entered, and not paused by `stop_recording`)."""
        return any(t is self for t in _ACTIVE.get())

    @property
    def persistent(self) -> bool:
        """Whether `gradient` may be called more than once."""
        return self._persistent

    def close(self) -> None:
        """Release every record now."""
        self._records = []

    def nbytes(self) -> int:
        """Bytes of array data that the records keep alive (outputs only)."""
        return sum(r[2].data.nbytes for r in self._records)

    def __len__(self) -> int:
        return len(self._records)

    def last_output(self) -> Tensor | None:
        """The output of the last op recorded, if any."""
        return self._records[-1][2] if self._records else None

    def __del__(self) -> None:
        # As an unclosed file does: the warning is silent by default, and under
        # -W error Python reports it as unraisable (a __del__ cannot raise).
        try:
            if not self._persistent or not self._records:
                return
            nbytes = self.nbytes()
            if nbytes > RESOURCE_WARNING_BYTES:
                message = _KEPT_BY_MISTAKE.format(records=len(self._records), nbytes=nbytes)
                warnings.warn(message, ResourceWarning, stacklevel=2, source=self)
        except Warning:
            raise
        except Exception:  # a half-built tape, or interpreter shutdown: say nothing
            pass

    def __repr__(self) -> str:
        return (
            f"Tape(persistent={self._persistent}, records={len(self._records)}, "
            f"bytes={self.nbytes()})"
        )

    # ---- one graph at a time (for `tapegrad.torchlike`) -------------------------------
    # PyTorch frees the graph behind a loss when backward() runs through it, and keeps any
    # other graph recorded meanwhile. The wrapper keeps only that policy; these three
    # methods are how it reads and takes a tape's records, so nothing outside Tape does.
    def graph_of(self, targets: list[Tensor]) -> list[int]:
        """Indices, in order, of the records that ``targets`` were computed from."""
        needed = {id(t) for t in targets}
        add = needed.add
        found = []
        records = self._records
        for i in range(len(records) - 1, -1, -1):
            record = records[i]
            if id(record[2]) in needed:
                found.append(i)
                for x in record[1]:
                    add(id(x))
        found.reverse()
        return found

    def take_records(self, indices: list[int], keep: bool = False) -> list[Record]:
        """The records at ``indices``, removed from this tape unless ``keep``."""
        records = self._records
        if not keep and len(indices) == len(records):  # the whole tape: the common case
            self._records = []
            return records
        taken = [records[i] for i in indices]
        if not keep:
            dropped = set(indices)
            self._records = [r for i, r in enumerate(records) if i not in dropped]
        return taken

    @classmethod
    def of_records(cls, records: list[Record]) -> Tape:
        """A tape, used once, holding ``records``: its `gradient` consumes the list."""
        tape = cls()
        tape._records = records
        return tape

    # ---- differentiation -----------------------------------------------------
    def gradient(
        self,
        target: Tensor,
        sources: S,
        output_gradients: Tensor | None = None,
        unconnected: Unconnected = "zero",
    ) -> S:
        """Gradients of ``target`` with respect to every tensor in ``sources``.

        ``sources`` is any pytree of tensors (a tensor, list, tuple, dict,
        frozen attrs class, with ``None`` leaves kept as ``None``); the result
        has the same structure and type. ``target`` must be a scalar unless
        ``output_gradients`` (the cotangent of ``target``) is given.

        A source that does not influence ``target`` gets zeros by default;
        ``unconnected="none"`` gives ``None`` and ``"error"`` raises.
        """
        if self._spent:
            raise RuntimeError(
                "Tape.gradient: this tape was already used; a non-persistent tape "
                "allows one gradient() call. Use Tape(persistent=True) to call it "
                "several times."
            )
        if unconnected not in ("zero", "none", "error"):
            raise ValueError(
                f"Tape.gradient: unconnected must be 'zero', 'none' or 'error', got {unconnected!r}"
            )
        leaves, treedef = tree.flatten(sources)
        _check_sources(sources, leaves)
        seed = _seed(target, output_gradients)
        records = self._records
        _check_recorded(target, leaves, records)
        if not self._persistent:
            self._records = []
            self._spent = True
        cot = self._backward(target, seed, [id(s) for s in leaves], records)
        del records
        grads = _finish(sources, leaves, cot, unconnected, seed)
        return treedef.unflatten(grads)  # type: ignore[no-any-return]

    def _backward(
        self, target: Tensor, seed: Tensor, source_ids: list[int], records: list[Record]
    ) -> dict[int, Tensor]:
        """Accumulate cotangents from ``target`` back to the sources."""
        keep = set(source_ids)
        # Forward sweep: only ops that read a source (directly or not) matter.
        dependent = set(keep)
        relevant: list[Record | None] = []
        complex_values = False
        for record in records:
            for x in record[1]:
                if id(x) in dependent:
                    dependent.add(id(record[2]))
                    relevant.append(record)
                    complex_values = complex_values or record[2].data.dtype.kind == "c"
                    break
        if not self._persistent:
            records.clear()
        cot: dict[int, Tensor] = {id(target): seed}
        if id(target) not in dependent:
            return cot
        nans = _anomaly.ACTIVE.get()
        # This tape must not record its own backward pass; outer tapes do.
        with self._paused():
            for i in range(len(relevant) - 1, -1, -1):
                prim, inputs, out, params = relevant[i]  # type: ignore[misc]
                if not self._persistent:
                    relevant[i] = None  # release this op's values as soon as they are used
                oid = id(out)
                g = cot.get(oid) if oid in keep else cot.pop(oid, None)
                if g is None:
                    continue
                needs = tuple([id(x) in dependent for x in inputs])
                if complex_values:
                    _refuse_complex(prim.name, inputs, needs)
                if nans is not None:
                    with _anomaly.rule_running():
                        grads = tuple(prim.vjp(g, out, inputs, params, needs))
                else:
                    grads = tuple(prim.vjp(g, out, inputs, params, needs))
                if len(grads) != len(inputs):
                    raise RuntimeError(
                        f"`{prim.name}`: its backward rule returned {len(grads)} cotangents "
                        f"for {len(inputs)} inputs"
                    )
                if nans is not None:
                    _anomaly.check_backward(nans, prim.name, out, grads)
                for x, gx, need in zip(inputs, grads, needs):
                    if not need or gx is None:
                        continue
                    gd, xd = gx.data, x.data
                    if gd.shape != xd.shape or gd.dtype != xd.dtype:
                        gx = _fit(gx, x, prim.name)
                    k = id(x)
                    prev = cot.get(k)
                    cot[k] = gx if prev is None else prev + gx
        return cot


def _path(sources: Any, index: int) -> str:
    """The key path of leaf ``index`` (only computed for error messages)."""
    return tree.flatten_with_paths(sources)[0][index]


def _check_sources(sources: Any, leaves: list[Any]) -> None:
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, Tensor) and leaf.dtype.kind == "f":
            continue
        path = _path(sources, i)
        if not isinstance(leaf, Tensor):
            raise TypeError(
                f"Tape.gradient: sources{path} is a {type(leaf).__name__}, not a Tensor; "
                "every leaf of `sources` must be a Tensor (or None)"
            )
        if leaf.dtype.kind != "f":
            raise TypeError(
                f"Tape.gradient: sources{path} has dtype {leaf.dtype}; only floating tensors "
                "can be differentiated. Cast it first, e.g. x.astype('float32')."
            )


def _check_recorded(target: Tensor, leaves: list[Any], records: list[Record]) -> None:
    """Refuse a target that no op on this tape produced: its gradients would all be zero.

    Unlike a source that does not influence a recorded target (which gets zeros,
    or what ``unconnected=`` asks for), this is always a mistake.
    """
    for record in reversed(records):  # the target is usually the last op recorded
        if record[2] is target:
            return
    if not leaves or any(leaf is target for leaf in leaves):
        return  # no gradient to get wrong, or d x / d x: the target is a source
    raise ValueError(
        "Tape.gradient: the target was not recorded on this tape, so no gradient can reach "
        "the sources. Likely causes: it was computed after the `with Tape()` block ended, "
        "through .numpy() or a plain array, under stop_recording(), or by stop_gradient(). "
        "Compute it inside the `with` block."
    )


def _refuse_complex(name: str, inputs: tuple[Tensor, ...], needs: tuple[bool, ...]) -> None:
    """Raise if a gradient would flow back into a complex value: it is not differentiated."""
    for x, need in zip(inputs, needs):
        if need and x.data.dtype.kind == "c":
            raise TypeError(
                f"Tape.gradient: `{name}` reads a value of dtype {x.data.dtype} that depends on "
                "the sources; tapegrad does not differentiate complex numbers. Keep complex "
                "values off the path from the sources to the target (compute them outside the "
                "tape, or from tapegrad.stop_gradient(x))."
            )


def _seed(target: Any, output_gradients: Tensor | None) -> Tensor:
    if not isinstance(target, Tensor):
        raise TypeError(f"Tape.gradient: target must be a Tensor, got {type(target).__name__}")
    if target.dtype.kind != "f":
        raise TypeError(
            f"Tape.gradient: target has dtype {target.dtype}; only a floating target can be "
            "differentiated"
        )
    if output_gradients is None:
        if target.size != 1:
            raise ValueError(
                f"Tape.gradient: target has shape {target.shape}, not a scalar. Reduce it "
                f"first (e.g. loss.sum() or loss.mean()), or pass output_gradients= with "
                f"shape {target.shape}."
            )
        return Tensor(array_module(target.data).ones(target.shape, dtype=target.dtype))
    if not isinstance(output_gradients, Tensor):
        raise TypeError(
            "Tape.gradient: output_gradients must be a Tensor, got "
            f"{type(output_gradients).__name__}"
        )
    if output_gradients.shape != target.shape:
        raise ValueError(
            f"Tape.gradient: output_gradients has shape {output_gradients.shape} but the "
            f"target has shape {target.shape}; they must match"
        )
    if output_gradients.device != target.device:
        raise ValueError(
            f"Tape.gradient: output_gradients is on {output_gradients.device} but the target "
            f"is on {target.device}"
        )
    if output_gradients.dtype != target.dtype:
        return output_gradients.astype(target.dtype)
    return output_gradients


def _fit(g: Tensor, x: Tensor, name: str) -> Tensor:
    """Reduce a broadcast cotangent to its input's shape and cast it to its dtype."""
    if g.shape != x.shape:
        g = unbroadcast(g, x.shape, name)
    if g.dtype != x.dtype:
        g = g.astype(x.dtype)
    return g


def unbroadcast(g: Tensor, shape: tuple[int, ...], op: str = "") -> Tensor:
    """Sum a broadcast cotangent back down to ``shape`` (NumPy's rule, reversed).

    This is the one place where broadcasting is undone, for every rule: a rule returns the
    cotangent of the broadcast shape, and the tape's accumulation step (`_fit`) sums it here.
    """
    lead = g.ndim - len(shape)
    if lead < 0 or any(s != 1 and s != gs for s, gs in zip(shape, g.shape[lead:])):
        raise RuntimeError(
            f"`{op}`: its backward rule returned a cotangent of shape {g.shape} for an input "
            f"of shape {shape}; this is a bug in the rule"
        )
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1
    )
    if axes:
        g = _sum(g, axes, keepdims=False)
    return reshape(g, shape) if g.shape != shape else g


def _finish(
    sources: Any,
    leaves: list[Tensor],
    cot: dict[int, Tensor],
    unconnected: Unconnected,
    seed: Tensor,
) -> list[Tensor | None]:
    """Pick each source's gradient; fill in the unconnected; never alias."""
    seen: set[int] = set()
    out: list[Tensor | None] = []
    for i, leaf in enumerate(leaves):
        g = cot.get(id(leaf))
        if g is None:
            if unconnected == "error":
                raise ValueError(
                    f"Tape.gradient: sources{_path(sources, i)} does not influence the target. Likely "
                    "causes: it was never used, it was used under stop_recording() or "
                    "stop_gradient(), it went through .numpy(), or it passed through an "
                    "integer op."
                )
            if unconnected == "none":
                out.append(None)
                continue
            xp = array_module(leaf.data)
            out.append(Tensor(xp.zeros(leaf.shape, dtype=leaf.dtype)))
            continue
        # Rules may pass one cotangent to several inputs, or return views;
        # a returned gradient must own its memory.
        array = g.data
        if id(array) in seen or g is seed or g is leaf or (
            isinstance(array, np.ndarray) and array.base is not None
        ):
            g = copy(g)
        seen.add(id(g.data))
        out.append(g)
    return out
