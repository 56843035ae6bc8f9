"""Noticing a trace that draws from NumPy's global random generator, in this thread only.

A replay would freeze such a draw at the trace's numbers. The draws cannot be
seen as calls (NumPy's generator methods are compiled code that no profiler
hook reports), and comparing the global state before and after the trace
blames the traced function for any other thread's draw. So while a trace
runs, `np.random`'s module-level functions are wrapped: a wrapper notes the
draw only when the calling thread is tracing, and otherwise just calls through.
A function that bound a draw function before (``from numpy.random import
normal``) bypasses the wrappers; for it, the state comparison still decides
when this is the only thread.

A generator object the function reads from outside its arguments (a
module-level ``rng = np.random.default_rng(0)``, one in a closure or on an
object a method belongs to) is frozen the same way. Its draws cannot be
wrapped either, so `reachable_generators` finds the generators the function
can name (its globals, closure cells and defaults, and those of the functions
and objects they name), and the trace compares their states before and after.
An unseeded ``np.random.default_rng()`` made inside draws fresh entropy on
every eager call; it is noted as a draw from the global generator is.
"""

from __future__ import annotations

import functools
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

_LOCK = threading.Lock()
_installed: dict[str, Callable[..., Any]] = {}  # name -> the original, while any trace runs
_tracers = 0
_local = threading.local()


def _global_draw_functions() -> dict[str, Callable[..., Any]]:
    """``np.random``'s functions that are methods of the global legacy generator."""
    shared = np.random.mtrand._rand
    return {
        name: fn for name in dir(np.random)
        if getattr(fn := getattr(np.random, name), "__self__", None) is shared
        and name != "get_state"  # reads the state without changing it
    }


def _watching(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def draw(*args: Any, **kwargs: Any) -> Any:
        drawn = getattr(_local, "drawn", None)
        if drawn is not None:
            drawn.append(name)
        return original(*args, **kwargs)

    return draw


def _watching_default_rng(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def default_rng(seed: Any = None) -> Any:
        drawn = getattr(_local, "drawn", None)
        if drawn is not None and seed is None:  # fresh entropy: another stream every eager call
            drawn.append("default_rng")
        return original(seed)

    return default_rng


@contextmanager
def watch_global_random() -> Iterator[Callable[[], str | None]]:
    """Inside the block, note this thread's draws from ``np.random.*``.

    Yields a function that says, after the block, whether this thread drew:
    ``"default_rng"`` if it made an unseeded generator, ``"global"`` if it drew
    from the global one, ``None`` if neither.
    """
    global _tracers
    with _LOCK:
        if _tracers == 0:
            for name, fn in _global_draw_functions().items():
                _installed[name] = fn
                setattr(np.random, name, _watching(name, fn))
            _installed["default_rng"] = np.random.default_rng
            np.random.default_rng = _watching_default_rng(np.random.default_rng)
        _tracers += 1
    outer = getattr(_local, "drawn", None)
    drawn: list[str] = []
    _local.drawn = drawn
    before = np.random.get_state(legacy=False)
    alone = threading.active_count() == 1

    def drew() -> str | None:
        if "default_rng" in drawn:
            return "default_rng"
        if drawn or (alone and not same_states(before, np.random.get_state(legacy=False))):
            return "global"
        return None

    try:
        yield drew
    finally:
        _local.drawn = outer
        with _LOCK:
            _tracers -= 1
            if _tracers == 0:
                for name, fn in _installed.items():
                    setattr(np.random, name, fn)
                _installed.clear()


GENERATORS = (np.random.Generator, np.random.RandomState, np.random.BitGenerator)
# Code that holds no generator a user's function could draw from: not walked.
_NOT_WALKED = ("numpy", "tapegrad.", "builtins", "functools", "attrs")
_MAX_WALKED = 4096


def reachable_generators(fn: Callable[..., Any]) -> list[Any]:
    """NumPy generators ``fn`` can name without being passed them.

    Follows, from ``fn``, the globals its code names, its closure cells and
    defaults, the function and instance a bound method or `functools.partial`
    holds, and those attributes of an instance that the walked code names
    (``self.rng``); it does not look inside containers.
    """
    found: list[Any] = []
    seen: set[int] = set()
    names: set[str] = set()  # every name the walked code uses, attributes included
    stack: list[Any] = [fn]
    while stack and len(seen) < _MAX_WALKED:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, GENERATORS):
            found.append(obj)
        elif isinstance(obj, types.MethodType):
            stack += [obj.__self__, obj.__func__]  # the function first, for its names
        elif isinstance(obj, functools.partial):
            stack += [obj.func, *obj.args, *obj.keywords.values()]
        elif isinstance(obj, types.FunctionType):
            if obj is not fn and (obj.__module__ or "").startswith(_NOT_WALKED):  # fn: whatever its module
                continue
            stack += _named_by(obj, names)
        elif not isinstance(obj, type | types.ModuleType) and hasattr(obj, "__dict__"):
            if type(obj).__module__.startswith(_NOT_WALKED):
                continue
            # An object the code uses: the attributes it names (a generator drawn from
            # by another thread, under a name this code never uses, is no concern).
            stack += [v for k, v in vars(obj).items()
                      if k in names and (isinstance(v, GENERATORS) or callable(v))]
            stack.append(getattr(type(obj), "__call__", None))
    return found


def _named_by(fn: types.FunctionType, names: set[str]) -> list[Any]:
    """What a function's code can reach by name: globals (and module attributes), cells, defaults.

    Adds the names its code uses to ``names``.
    """
    own: set[str] = set()
    codes = [fn.__code__]
    while codes:
        code = codes.pop()
        own.update(code.co_names)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    names |= own
    reached: list[Any] = []
    for name in own:
        value = fn.__globals__.get(name)
        if isinstance(value, types.ModuleType):
            if value.__name__.startswith(_NOT_WALKED):
                continue
            # `state.rng.normal(...)`: the attribute names sit among the code's names too.
            reached += [value.__dict__[n] for n in own if isinstance(value.__dict__.get(n), GENERATORS)]
        elif value is not None:
            reached.append(value)
    for cell in fn.__closure__ or ():
        try:
            reached.append(cell.cell_contents)
        except ValueError:  # a cell not filled yet
            pass
    reached += list(fn.__defaults__ or ()) + list((fn.__kwdefaults__ or {}).values())
    return reached


def generator_states(generators: list[Any]) -> list[Any]:
    """Each generator's state, to compare after the trace."""
    return [g.get_state(legacy=False) if isinstance(g, np.random.RandomState)
            else (g.bit_generator if isinstance(g, np.random.Generator) else g).state
            for g in generators]


def same_states(a: Any, b: Any) -> bool:
    """Whether two generator states (dicts of ints and arrays) are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_states(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_states(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    return bool(a == b)
