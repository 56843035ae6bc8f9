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
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

from .. import _tree
from .._replay import replay as core_replay
from .._tensor import Tensor as CoreTensor
from .._traced import ReplayError
from . import _autograd
from ._module import Module
from ._optim import Optimizer
from ._tensor import Tensor

P = ParamSpec("P")
R = TypeVar("R")

State = tuple[tuple[CoreTensor, ...], tuple[CoreTensor | None, ...], tuple[Any, ...]]


class _Holders:
    """The tensors and optimizers whose state a replayed step reads and writes."""

    def __init__(self, objects: Sequence[Module | Optimizer]) -> None:
        tensors: dict[int, Tensor] = {}
        optimizers: list[Optimizer] = []
        for obj in objects:
            if isinstance(obj, Module):
                found = obj.parameters() + [b for b in obj._buffers.values() if b is not None]
            elif isinstance(obj, Optimizer):
                found = obj.params
                optimizers.append(obj)
            else:
                raise TypeError(
                    "torchlike.replay: the stateful objects must be Modules or Optimizers, got "
                    f"{type(obj).__name__}"
                )
            for t in found:
                tensors.setdefault(id(t), t)
        self.tensors = list(tensors.values())
        self.optimizers = optimizers

    def read(self) -> State:
        return (
            tuple(t.value for t in self.tensors),
            tuple(None if t.grad is None else t.grad.value for t in self.tensors),
            tuple(opt.state for opt in self.optimizers),
        )

    def write(self, state: State) -> None:
        values, grads, opt_states = state
        for t, value, grad in zip(self.tensors, values, grads):
            t.value = value
            t.grad = None if grad is None else Tensor(grad)
        for opt, opt_state in zip(self.optimizers, opt_states):
            opt.state = opt_state


def _unwrap(tree: Any, what: str) -> Any:
    """Wrapper tensors as core tensors (the replay's pytree leaves)."""

    def one(x: Any) -> Any:
        if not isinstance(x, Tensor):
            return x
        if x.requires_grad and what == "argument":
            raise ReplayError(
                "torchlike.replay: an argument requires grad; a replayed step must reach its "
                "parameters through the modules and optimizers passed to replay(), not its arguments"
            )
        return x.value

    return _tree.map(one, tree)  # a wrapper tensor is not a pytree node: it is a leaf


def _wrap(tree: Any) -> Any:
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
    >>> x, y = tl.Tensor([[1.0, 2.0, 3.0]]), tl.Tensor([[1.0]])
    >>> losses = [step(x, y).item() for _ in range(3)]
    >>> losses[2] < losses[0]
    True
    """
    holders = _Holders(stateful)

    def pure(state: State, args: Any, kwargs: Any) -> tuple[State, Any]:
        holders.write(state)
        out = step(*_wrap(args), **_wrap(kwargs))
        return holders.read(), _unwrap(out, "result")

    # The objects' old state is replaced after every call, so it is donated: a
    # replay updates parameters and moments in place, as PyTorch's optimizers do.
    replayed = core_replay(pure, donate_argnums=0)
    # The trace leaves traced values in the objects until `call` writes the new
    # state back; only then can it tell a value that escaped by a side effect.
    replayed.defer_escape_check = True

    @functools.wraps(step)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        # A graph left open by an earlier forward pass would make the call
        # look like it runs under a recording tape; as zero_grad() would, drop it.
        _autograd.release()
        before = holders.read()
        try:
            new_state, out = replayed(before, _unwrap(args, "argument"), _unwrap(kwargs, "argument"))
        except BaseException:
            holders.write(before)  # a failed trace must not leave traced values behind
            raise
        holders.write(new_state)
        replayed.check_escapes()
        return _wrap(out)  # type: ignore[no-any-return]

    call.replayed = replayed  # type: ignore[attr-defined]
    return call
