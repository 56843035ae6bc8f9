"""Packed buffers: many arrays as consecutive views of one flat buffer, and how to recognise them.

An optimizer step over six small arrays costs six times the Python calls of
one step over their concatenation. So a fused optimizer keeps what it hands
out (new parameters, moments) as views into one flat buffer, and a replay
that receives exactly those views can take the buffer as one input instead.
This module is the one place where such buffers are made and recognised.

The contract:

- **Who packs.** Whoever makes the views, through `views` (or `split`, which
  also records the call when the buffer is traced). In tapegrad that is the
  optimizer's packing helpers (``optim/_packing.py``), which the PyTorch-style
  wrapper also uses for its ``.grad`` buffer while a replay traces its step.
  Making the views registers them.
- **Who recognises.** The optimizer's next step (`find_run`: the leaves are a
  buffer already, so no copy), and the replay: ``bind`` (`find_run`) and its
  generated guard (`is_packed_view`, `view_refs`) pass a buffer whole.
- **What counts.** The exact view objects `views` made, in order, each with
  its registered shape: an identity check, so other views of the same memory
  are never taken for the buffer, and a view reshaped in place since
  (``view.shape = ...``) breaks its run.
- **Lifetime.** The registry holds weak references only, to the buffer and to
  its views; an entry goes when its buffer dies.
- **No buffer is written after it is handed out.** A packer never writes
  into a buffer, or its views, once it has returned them. So the views are
  values, and passing the buffer in their place changes nothing. (A replay
  may still write into a buffer its caller donated: the caller gave it up.)
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from ._traced import Traced

#: The shapes of a buffer's views, in order; the views cover the buffer from its start.
Layout = tuple[tuple[int, ...], ...]


class _Entry:
    """What the registry knows of one buffer: it and its views (weakly), and their shapes."""

    __slots__ = ("buffer", "views", "layout")

    def __init__(self, buffer: Any, views: tuple[Any, ...], layout: Layout, forget: Any) -> None:
        self.buffer = weakref.ref(buffer, forget)
        self.views = tuple([weakref.ref(v) for v in views])
        self.layout = layout


# Keyed by id(buffer): an entry is checked against its weak reference before use,
# and removed by that reference's callback when the buffer dies.
_REGISTRY: dict[int, _Entry] = {}


def _forget(key: int) -> Any:
    return lambda _: _REGISTRY.pop(key, None)


def _register(buffer: Any, made: tuple[Any, ...], layout: Layout) -> None:
    key = id(buffer)
    _REGISTRY[key] = _Entry(buffer, made, layout, _forget(key))


def _entry(buffer: Any, layout: Layout) -> _Entry | None:
    """The registry's entry for the live ``buffer`` packed as ``layout``, if any."""
    entry = _REGISTRY.get(id(buffer))
    if entry is None or entry.buffer() is not buffer or entry.layout != layout:
        return None
    return entry


def view_refs(buffer: Any, layout: Layout) -> tuple[weakref.ref[Any], ...] | None:
    """Weak references to the views `views` made of ``buffer`` for ``layout``, in order; else ``None``.

    For the replay's guard, which runs on every call: it dereferences them
    inline, one identity check per view, which costs less than a call would
    (and checks each view's shape against ``layout`` itself).
    """
    entry = _entry(buffer, layout)
    return None if entry is None else entry.views


def is_packed_view(array: Any) -> bool:
    """Whether ``array`` is a view into a registered buffer (it may begin a run that `find_run` finds)."""
    base = array.base
    return base is not None and id(base) in _REGISTRY


def find_run(arrays: Sequence[Any], start: int) -> tuple[Any, Layout] | None:
    """The buffer whose registered views, in order, begin ``arrays[start:]``, and their layout.

    `tapegrad.replay` passes such a buffer instead of its views, so that the
    replay need not concatenate them again; an optimizer packing these
    arrays takes the buffer as it is.
    """
    base = arrays[start].base
    entry = _REGISTRY.get(id(base)) if base is not None else None
    if entry is None or entry.buffer() is not base or start + len(entry.views) > len(arrays):
        return None
    for k, (ref, shape) in enumerate(zip(entry.views, entry.layout)):
        view = ref()
        if view is None or view is not arrays[start + k] or view.shape != shape:
            return None
    return base, entry.layout


def views(buffer: Any, layout: Layout) -> tuple[Any, ...]:
    """Views of the flat ``buffer`` with the shapes in ``layout``, in order, registered as its packing.

    The views registered for ``buffer`` and ``layout`` are returned again
    while they are alive and unchanged: the same memory with the same shapes,
    so the same values as slicing anew, for a sixth of the cost.
    """
    entry = _entry(buffer, layout)
    if entry is not None:
        made = tuple([ref() for ref in entry.views])
        # A view's shape can be reassigned in place; such a view is no longer ours.
        if all(v is not None and v.shape == shape for v, shape in zip(made, layout)):
            return made
    # A 1-d piece is its slice already: a reshape would only cost another view.
    new = tuple([
        buffer[start:stop] if len(shape) == 1 else buffer[start:stop].reshape(shape)
        for start, stop, shape in _bounds(layout)
    ])
    _register(buffer, new, layout)
    return new


def split(buffer: Any, layout: Layout) -> list[Any]:
    """`views` of ``buffer``, as a list; while tracing, recorded as one call.

    One recorded call rather than a slice and a reshape per view: a replay
    that writes its results into a buffer it was given (a donated one) then
    hands back that buffer's registered views instead of slicing anew.
    """
    if type(buffer) is Traced:
        made = list(buffer.recording.record("call", views, (buffer, layout), {}, lambda a, k: views(*a)))
        # The traced views are registered too, so that the rest of the trace
        # finds them as one buffer, as an eager step finds the real ones.
        _register(buffer, tuple(made), layout)
        return made
    return list(views(buffer, layout))


_BOUNDS: dict[Layout, tuple[tuple[int, int, tuple[int, ...]], ...]] = {}
# The layout asked for last, and its bounds: a replay asks for the same layout object on
# every call, which this answers without hashing it.
_last_bounds: tuple[Layout, tuple[tuple[int, int, tuple[int, ...]], ...]] = ((), ())


def _bounds(layout: Layout) -> tuple[tuple[int, int, tuple[int, ...]], ...]:
    """Where each view of ``layout`` starts and stops in the buffer, with its shape (computed once)."""
    global _last_bounds
    last = _last_bounds  # read once: another thread may replace it
    if last[0] is layout:
        return last[1]
    bounds = _BOUNDS.get(layout)
    if bounds is None:
        found = []
        start = 0
        for shape in layout:
            size = 1
            for d in shape:
                size *= d
            found.append((start, start + size, shape))
            start += size
        bounds = tuple(found)
        if len(_BOUNDS) < 256:  # a program packs a few layouts; never grow without bound
            _BOUNDS[layout] = bounds
    _last_bounds = (layout, bounds)
    return bounds
