"""PyTorch's implicit graph, rebuilt on one explicit `Tape` per thread.

PyTorch records whenever a tensor that requires grad takes part in an op.
Here, the first such op opens an ambient tape on this thread; ``backward()``
asks that tape for the gradients of every leaf it saw and then closes it, and
``zero_grad()`` closes it too, so a forward pass that is never backpropagated
(an evaluation step) cannot keep its values alive past the next step.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .._tape import Tape

if TYPE_CHECKING:
    from ._tensor import Tensor


class _Ambient(threading.local):
    def __init__(self) -> None:
        self.tape: Tape | None = None
        self.leaves: dict[int, Tensor] = {}
        self.enabled = True


_AMBIENT = _Ambient()


def grad_enabled() -> bool:
    """False inside `no_grad`."""
    return _AMBIENT.enabled


def watch(leaf: Tensor) -> None:
    """Start recording if needed, and remember ``leaf`` for ``backward()``."""
    ensure_recording()
    _AMBIENT.leaves[id(leaf)] = leaf


def ensure_recording() -> None:
    """Open the ambient tape if no op has opened it yet."""
    if _AMBIENT.tape is None:
        tape = Tape()
        tape.__enter__()
        _AMBIENT.tape = tape


def release() -> None:
    """Close the ambient tape and forget its leaves."""
    tape = _AMBIENT.tape
    if tape is not None:
        _AMBIENT.tape = None
        _AMBIENT.leaves = {}
        try:
            tape.__exit__(None, None, None)
        except ValueError:  # pragma: no cover - exited from another context
            pass
        tape.close()


def backward(root: Tensor, gradient: Any = None) -> None:
    """Accumulate d(root)/d(leaf) into every recorded leaf's ``.grad``."""
    from ._tensor import Tensor as Wrapped

    tape = _AMBIENT.tape
    if tape is None or not root.requires_grad:
        raise RuntimeError(
            "backward(): this tensor does not require grad; it was not computed from any "
            "tensor with requires_grad=True since the last backward() or zero_grad()"
        )
    leaves = list(_AMBIENT.leaves.values())
    seed = None if gradient is None else (gradient.value if isinstance(gradient, Wrapped) else gradient)
    # The tape must stop recording before it differentiates.
    _AMBIENT.tape = None
    _AMBIENT.leaves = {}
    tape.__exit__(None, None, None)
    grads = tape.gradient(root.value, [leaf.value for leaf in leaves], seed, unconnected="none")
    for leaf, g in zip(leaves, grads):
        if g is not None:
            leaf.accumulate_grad(g)


@contextmanager
def no_grad() -> Iterator[None]:
    """Record nothing inside the block, as ``torch.no_grad()``."""
    previous = _AMBIENT.enabled
    _AMBIENT.enabled = False
    tape = _AMBIENT.tape
    stop = tape.stop_recording() if tape is not None else None
    try:
        if stop is not None:
            with stop:
                yield
        else:
            yield
    finally:
        _AMBIENT.enabled = previous
