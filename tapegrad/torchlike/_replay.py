"""``replay(step, model, optimizer)``: the wrapper's ``torch.compile`` for a training step.

A PyTorch-style step reads and writes state held in objects: the parameters'
``.data`` and ``.grad``, the optimizer's moments. `tapegrad.replay` wants a
pure function. So this wrapper makes one: it gathers the objects' state into
a pytree, runs the step on it (traced the first time, replayed after) and
writes the new state back, as ``torch.compile`` does with a module's
parameters. The step itself stays the classic loop body, unchanged.
"""

from __future__ import annotations

import functools
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, ParamSpec, TypeVar

import numpy as np

from .. import _tree
from .._replay._replayed import RETRACE_WARNING_AFTER, ReplayRetraceWarning
from .._replay._replayed import replay as core_replay
from .._replay._signature import static_key
from .._core._tensor import Tensor as CoreTensor
from .._arrays._traced import ReplayError
from . import _autograd
from ._module import Module
from ._optim import Optimizer
from ._tensor import Tensor

P = ParamSpec("P")
R = TypeVar("R")

#: What a trace changed in the objects is kept for this many signatures (as the replay's cache).
MAX_SIGNATURES = 32
#: A list, tuple or dict longer than this that no module or optimizer holds (a data set the
#: step indexes) is guarded by identity and length, not item by item; its items are constants.
WALKED_AT_MOST = 64
_BY_VALUE = frozenset({bool, int, str, bytes, type(None)})


class _Identity:
    """A key part equal only to the same object, which it keeps alive (an id could be reused)."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


class _Scan:
    """What a step reads from the objects it can reach, read again before every call.

    As ``torch.compile``'s guards: the objects passed to `replay`, and the
    modules, optimizers and values the step names in its closure and globals
    (``self`` for a method), are walked. Every tensor a module or optimizer
    holds becomes state (read and written back); everything else they hold
    (``training``, ``requires_grad``, plain attributes, ``param_groups``'
    hyperparameters) and the plain values the step names become the entries of
    ``key``: a change there makes a new signature, so the step is traced again.
    Each entry is ``(path, value's key)``; ``setters`` says, per entry, how to
    set it back (for changes the step itself makes, which a replay repeats).
    """

    def __init__(self) -> None:
        self.tensors: list[Tensor] = []
        self.optimizers: list[Optimizer] = []
        self.entries: list[tuple[str, Hashable]] = []
        self.setters: list[tuple[Any, Any, Any] | None] = []
        self._seen: dict[int, int] = {}
        # The source of `unchanged`: one straight-line check per entry, as the core
        # replay's guards (and torch.compile's) are, instead of a walk per call.
        self._lines: list[str] = []
        self._env: dict[str, Any] = {"static_key": static_key}

    def add(self, path: str, key: Hashable, setter: tuple[Any, Any, Any] | None = None) -> None:
        self.entries.append((path, key))
        self.setters.append(setter)

    def _const(self, value: Any) -> str:
        name = f"k{len(self._env)}"
        self._env[name] = value
        return name

    def _check(self, condition: str) -> None:
        self._lines.append(f"if {condition}: return False")

    def _temp(self, expr: str) -> str:
        name = f"v{len(self._lines)}"
        self._lines.append(f"{name} = {expr}")
        return name

    def walk(
        self, path: str, value: Any, held: bool, setter: tuple[Any, Any, Any] | None = None, var: str = ""
    ) -> None:
        """Describe ``value`` (read in the generated check as ``var``).

        ``held`` when a module or optimizer holds it: its tensors are state.
        """
        cls = type(value)
        if cls in _BY_VALUE:
            self.add(path, (cls, value), setter)
            if value is None or cls is bool:
                self._check(f"{var} is not {value}")
            else:
                self._check(f"type({var}) is not {self._const(cls)} or {var} != {self._const(value)}")
            return
        if cls is float:  # by its bits: -0.0 == 0.0 and nan != nan, but neither replays as the other
            self.add(path, (cls, value.hex()), setter)
            # The same float object (a hyperparameter nobody set since) has the same bits.
            self._check(f"{var} is not {self._const(value)} and "
                        f"(type({var}) is not float or {var}.hex() != {self._const(value.hex())})")
            return
        if isinstance(value, np.ndarray | CoreTensor):  # frozen into the trace: by identity
            self.add(path, ("array", _Identity(value)))
            self._check(f"{var} is not {self._const(value)}")
            return
        seen = self._seen.get(id(value))
        if seen is not None:  # the same object again (tied weights, a shared module)
            self.add(path, ("same", seen))
            self._check(f"{var} is not {self._const(value)}")
            return
        if isinstance(value, Tensor | Module | Optimizer | list | tuple | dict):
            self._seen[id(value)] = len(self.entries)
            self._check(f"{var} is not {self._const(value)}")
            if not held and isinstance(value, list | tuple | dict) and len(value) > WALKED_AT_MOST:
                self.add(path, (cls, len(value), _Identity(value)))
                self._check(f"len({var}) != {len(value)}")
                return
        if isinstance(value, Tensor):
            flag = (value, "requires_grad", None)  # the one thing of a tensor a step may set
            if held:
                self.add(path, ("state", len(self.tensors), _Identity(value), value.requires_grad), flag)
                self.tensors.append(value)
            else:  # frozen into the trace: by the identity of its value
                self.add(path, ("tensor", _Identity(value.value), value.requires_grad), flag)
                self._check(f"{var}.value is not {self._const(value.value)}")
            self._check(f"{var}.requires_grad is not {value.requires_grad}")
        elif isinstance(value, Module | Optimizer):
            self.add(path, ("object", cls))
            if isinstance(value, Optimizer):
                self.optimizers.append(value)
            attributes = vars(value)
            d = self._temp(f"{var}.__dict__")
            self._check(f"{d}.keys() != {self._const(set(attributes))}")
            unguarded = value._unguarded
            for name, attribute in attributes.items():
                if name not in unguarded:
                    item = self._temp(f"{d}[{self._const(name)}]")
                    self.walk(path + "." + name, attribute, True, (value, name, "attribute"), item)
        elif isinstance(value, list | tuple):
            self.add(path, (cls, len(value)))
            self._check(f"len({var}) != {len(value)}")
            for i, item in enumerate(value):
                self.walk(f"{path}[{i}]", item, held, (value, i, "item") if cls is list else None,
                          self._temp(f"{var}[{i}]"))
        elif isinstance(value, dict):
            self.add(path, (cls, tuple(value)))
            self._check(f"{var}.keys() != {self._const(set(value))}")
            for k, item in value.items():
                self.walk(f"{path}[{k!r}]", item, held, (value, k, "item"), self._temp(f"{var}[{self._const(k)}]"))
        else:
            try:
                key = static_key(value)
                self.add(path, key, setter)
                self._check(f"static_key({var}) != {self._const(key)}")
            except ReplayError:  # not hashable: by identity
                self.add(path, ("object", cls, _Identity(value)), setter)
                self._check(f"{var} is not {self._const(value)}")

    def unchanged(self) -> Callable[[list[Callable[[], Any]]], bool]:
        """A function of the readers: True while everything this scan saw is as it was."""
        source = "def unchanged(readers):\n" + "".join(f"    {line}\n" for line in [*self._lines, "return True"])
        env = dict(self._env)
        exec(compile(source, "<torchlike.replay guard>", "exec"), env)  # noqa: S102 - our own source
        return env["unchanged"]  # type: ignore[no-any-return]

    def write(self, changes: list[tuple[tuple[Any, Any, Any], Any]]) -> None:
        """Set again what the step changed when it was traced (a replay does not run it)."""
        for (owner, name, kind), value in changes:
            if kind == "item":
                owner[name] = value
            else:
                setattr(owner, name, value)


def _named_by(step: Callable[..., Any]) -> list[tuple[str, Callable[[], Any]]]:
    """The step's defaults, closure variables, the globals its code names, and ``self``, as readers."""
    readers: list[tuple[str, Callable[[], Any]]] = []
    owner = getattr(step, "__self__", None)
    if owner is not None:
        readers.append(("self", _constant(owner)))
    function = getattr(step, "__func__", step)
    code = getattr(function, "__code__", None)
    if code is None:
        return readers
    defaults = getattr(function, "__defaults__", None) or ()
    positional = code.co_varnames[code.co_argcount - len(defaults):code.co_argcount]
    for name, value in [*zip(positional, defaults), *(getattr(function, "__kwdefaults__", None) or {}).items()]:
        readers.append((name, _constant(value)))  # a default the call does not pass
    for name, cell in zip(code.co_freevars, getattr(function, "__closure__", None) or ()):
        readers.append((name, functools.partial(_contents, cell)))
    names: set[str] = set()
    codes = [code]
    while codes:  # names used by nested functions and comprehensions count too
        c = codes.pop()
        names.update(c.co_names)
        codes.extend(k for k in c.co_consts if isinstance(k, type(code)))
    namespace = getattr(function, "__globals__", {})
    for name in sorted(names):
        if name in namespace and not isinstance(namespace[name], type | types.ModuleType | types.FunctionType):
            readers.append((name, functools.partial(namespace.get, name)))
    return readers


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


def _contents(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # not yet assigned
        return None


State = tuple[tuple[CoreTensor, ...], tuple[CoreTensor | None, ...], tuple[Any, ...]]


def _read(scan: _Scan) -> State:
    # Lists, not generators, inside tuple(): this runs twice per call.
    return (
        tuple([t.value for t in scan.tensors]),
        tuple([None if t.grad is None else t.grad.value for t in scan.tensors]),
        tuple([opt.state for opt in scan.optimizers]),
    )


def _write(scan: _Scan, state: State) -> None:
    values, grads, opt_states = state
    for t, value, grad in zip(scan.tensors, values, grads):
        t.value = value
        t.grad = None if grad is None else Tensor(grad)
    for opt, opt_state in zip(scan.optimizers, opt_states):
        opt.state = opt_state


class StepState:
    """The description of what a step reads, as one static argument of the replay.

    Equal descriptions replay the same recording; its ``repr`` names what
    changed since the previous one, for `tapegrad.ReplayRetraceWarning`.
    """

    __slots__ = ("key", "changed", "_hash")

    def __init__(self, key: tuple[tuple[str, Hashable], ...], previous: StepState | None) -> None:
        self.key = key
        self.changed = "" if previous is None else _first_change(previous.key, key)
        self._hash = hash(key)  # the replay's guard hashes it on every call

    def __eq__(self, other: object) -> bool:
        return other is self or (isinstance(other, StepState) and other.key == self.key)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return self.changed or "the state read by the step"


def _first_change(before: tuple[tuple[str, Hashable], ...], after: tuple[tuple[str, Hashable], ...]) -> str:
    for (path, a), (_, b) in zip(before, after):
        if a != b:
            return path
    return "the objects reached"


def _unwrap(tree: Any, what: str) -> Any:
    """Wrapper tensors as core tensors (the replay's pytree leaves)."""
    # Every call passes its arguments through here: spare the common ones, ``step(x, y)``
    # with no keyword arguments, the pytree walk (a few microseconds each).
    if type(tree) is tuple and all([type(x) is Tensor for x in tree]):
        return tuple([_unwrapped(x, what) for x in tree])
    if type(tree) is dict and not tree:
        return {}
    return _tree.map(lambda x: _unwrapped(x, what), tree)  # a wrapper tensor is a leaf


def _unwrapped(x: Any, what: str) -> Any:
    if not isinstance(x, Tensor):
        return x
    if x.requires_grad and what == "argument":
        raise ReplayError(
            "torchlike.replay: an argument requires grad; a replayed step must reach its "
            "parameters through the modules and optimizers passed to replay(), not its arguments"
        )
    return x.value


def _wrap(tree: Any) -> Any:
    if type(tree) is CoreTensor:  # a step that returns its loss, spared the pytree walk
        return Tensor(tree)
    return _tree.map(lambda x: Tensor(x) if isinstance(x, CoreTensor) else x, tree)


def replay(step: Callable[P, R], *stateful: Module | Optimizer) -> Callable[P, R]:
    """Trace ``step`` once per signature and replay it, with the state of ``stateful``.

    ``stateful`` are the modules and optimizers the step uses: their
    parameters' values and gradients and the optimizers' state are read
    before each call and written back after it. As in PyTorch, a replay
    updates them in place: an array taken from ``p.data`` before a step
    holds the new values after it. Tensors the step returns
    come back as new wrapper tensors that do not require grad. The rules of
    `tapegrad.replay` apply: take ``loss.item()`` outside the step.

    As ``torch.compile``'s guards, the state the step reads is part of the
    signature: the modes (``model.eval()``), ``requires_grad`` flags and plain
    attributes of every module, and ``param_groups`` (``lr``) of every
    optimizer, in ``stateful`` or named by the step (closure, defaults,
    globals, ``self``). A change there traces the step again. What the step
    itself sets there (``model.train()`` inside it) is set again by each replay;
    a step that adds attributes or replaces tensors is refused.

    >>> import tapegrad.torchlike as tl
    >>> net = tl.Linear(3, 1)
    >>> opt = tl.SGD(net.parameters(), lr=0.01)
    >>> def train_step(x, y):
    ...     opt.zero_grad()
    ...     loss = ((net(x) - y) ** 2).mean()
    ...     loss.backward()
    ...     opt.step()
    ...     return loss
    >>> step = tl.replay(train_step, net, opt)
    >>> x, y = tl.Tensor(tl.xp.array([[1.0, 2.0, 3.0]])), tl.Tensor(tl.xp.array([[1.0]]))
    >>> losses = [step(x, y).item() for _ in range(3)]
    >>> losses[2] < losses[0]
    True
    """
    for obj in stateful:
        if not isinstance(obj, Module | Optimizer):
            raise TypeError(
                "torchlike.replay: the stateful objects must be Modules or Optimizers, got "
                f"{type(obj).__name__}"
            )
    # Names the step uses come first: a change is reported by the name the user knows.
    readers = _named_by(step)
    readers += [(f"stateful[{i}]", _constant(obj)) for i, obj in enumerate(stateful)]
    current: list[_Scan] = []
    # What each signature's trace changed in the objects' plain state (e.g. model.train()
    # inside the step), set again after each replay of it, least recently used dropped.
    changes_of: OrderedDict[StepState, list[tuple[tuple[Any, Any, Any], Any]]] = OrderedDict()
    last: list[StepState] = []

    getters = [read for _, read in readers]
    guarded: list[tuple[Callable[[list[Callable[[], Any]]], bool], _Scan, StepState]] = []

    def scan() -> _Scan:
        found = _Scan()
        for i, (name, read) in enumerate(readers):
            found.walk(name, read(), False, None, found._temp(f"readers[{i}]()"))
        return found

    def scan_if_changed() -> tuple[_Scan, StepState]:
        """The last scan and signature while its check passes (nearly always); else a new scan."""
        if guarded and guarded[0][0](getters):
            return guarded[0][1], guarded[0][2]
        found = scan()
        signature = StepState(tuple(found.entries), last[0] if last else None)
        if last and last[0] == signature:
            signature = last[0]
        guarded[:] = [(found.unchanged(), found, signature)]
        return found, signature

    def pure(state: State, args: Any, kwargs: Any, signature: StepState) -> tuple[State, Any]:
        _write(current[0], state)
        out = step(*_wrap(args), **_wrap(kwargs))
        return _read(current[0]), _unwrap(out, "result")

    # The objects' old state is replaced after every call, so it is donated: a
    # replay updates parameters and moments in place, as PyTorch's optimizers do.
    pure.__name__ = pure.__qualname__ = getattr(step, "__name__", "step")
    replayed = core_replay(pure, donate_argnums=0)
    # The trace leaves traced values in the objects until `call` writes the new
    # state back; only then can it tell a value that escaped by a side effect.
    replayed.defer_escape_check = True

    @functools.wraps(step)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        # A graph left open by an earlier forward pass cannot be used inside the
        # step; as zero_grad() would, drop it.
        _autograd.release()
        found, signature = scan_if_changed()
        current[:] = [found]
        before = _read(found)
        traces = replayed.traces
        arguments = (before, _unwrap(args, "argument"), _unwrap(kwargs, "argument"), signature)
        try:
            if traces == RETRACE_WARNING_AFTER - 1 and last and signature is not last[0]:
                new_state, out = _retrace_warning_named(replayed, arguments, signature.changed)
            else:
                new_state, out = replayed(*arguments)
        except BaseException:
            _write(found, before)  # a failed trace must not leave traced values behind
            raise
        finally:
            _autograd.release()  # what the trace recorded and left is of no use
            current.clear()
        _write(found, new_state)
        traced = replayed.traces != traces
        try:
            replayed.check_escapes()
            if traced:
                changes_of[signature] = _changes(found, scan())
        except ReplayError:
            replayed.clear()  # never replay what was refused
            raise
        if traced:
            if len(changes_of) > MAX_SIGNATURES:
                changes_of.popitem(last=False)
        elif signature in changes_of:
            changes_of.move_to_end(signature)
            found.write(changes_of[signature])
        last[:] = [signature]
        return _wrap(out)  # type: ignore[no-any-return]

    call.replayed = replayed  # type: ignore[attr-defined]
    return call


def _retrace_warning_named(replayed: Any, arguments: Any, changed: str) -> Any:
    """Call ``replayed``; if it warns that it keeps retracing, say which state read by the step changed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = replayed(*arguments)
    for w in caught:
        if issubclass(w.category, ReplayRetraceWarning):
            warnings.warn(
                f"torchlike.replay: `{replayed.__name__}` has been traced {replayed.traces} times; the "
                f"last trace was caused by {changed} changing. The state a step reads from its modules "
                "and optimizers (modes, requires_grad, plain attributes, param_groups) is part of the "
                "signature, as in torch.compile's guards, so a value that changes every call retraces "
                "every call: change it less often (once per epoch), or pass it as a tensor argument.",
                ReplayRetraceWarning,
                stacklevel=3,
            )
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return result


def _changes(before: _Scan, after: _Scan) -> list[tuple[tuple[Any, Any, Any], Any]]:
    """The plain values the step changed while traced, with how to set each again."""
    if [path for path, _ in before.entries] != [path for path, _ in after.entries]:
        raise ReplayError(
            "torchlike.replay: the step added or removed attributes, parameters or modules of the "
            "objects it uses, which a replay cannot repeat; build the model and the optimizer "
            "before calling the step"
        )
    found = []
    for (path, a), (_, b), setter in zip(before.entries, after.entries, after.setters):
        if a == b:
            continue
        # Every key is a tuple; a tensor's last item is its requires_grad, which a step may set.
        assert isinstance(a, tuple) and isinstance(b, tuple)
        tensor_flag = b[:1] in (("state",), ("tensor",)) and a[:-1] == b[:-1]
        if setter is None or (b[:1] in (("state",), ("tensor",), ("same",)) and not tensor_flag):
            raise ReplayError(
                f"torchlike.replay: the step replaced {path}, which a replay cannot repeat; "
                "change it outside the step"
            )
        owner, name, kind = setter
        found.append((setter, owner[name] if kind == "item" else getattr(owner, name)))
    return found
