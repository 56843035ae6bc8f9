"""User-defined primitives with their own backward rule, spelled as in JAX.

>>> import tapegrad as tg
>>> @tg.custom_vjp
... def square(x):
...     return x * x
>>> def square_fwd(x):
...     return square(x), x          # (output, residuals)
>>> def square_bwd(x, g):
...     return (2 * x * g,)          # one cotangent per positional input
>>> square.defvjp(square_fwd, square_bwd)
>>> w = tg.tensor(3.0)
>>> with tg.Tape() as tape:
...     y = square(w)
>>> tape.gradient(y, w)
Tensor(6., dtype=float32, device=cpu)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any, Generic, ParamSpec

from ._primitive import Primitive
from ._record import _ACTIVE, emit
from ._tensor import Tensor

P = ParamSpec("P")

Fwd = Callable[..., tuple[Tensor, Any]]
Bwd = Callable[[Any, Tensor], Sequence[Tensor | None]]


class custom_vjp(Generic[P]):  # noqa: N801 - JAX's spelling
    """Decorate ``fun`` to give it a backward rule of its own with `defvjp`.

    ``fwd(*args)`` returns ``(output, residuals)``; ``bwd(residuals, g)``
    returns a tuple with one cotangent per positional argument (``None`` for
    arguments that are not differentiable, such as integer labels). Keyword
    arguments are static: passed to ``fun`` and ``fwd``, never differentiated.

    Without any tape recording, calling the function runs ``fun`` itself. If
    ``bwd`` is written with tapegrad ops, higher derivatives work too.
    """

    def __init__(self, fun: Callable[P, Tensor]) -> None:
        self.fun = fun
        self.fwd: Fwd | None = None
        self.bwd: Bwd | None = None
        self._prim = Primitive(f"custom_vjp {getattr(fun, '__name__', 'fun')}", self._vjp)
        # True while `fwd` runs, so that `fwd` may call the function itself.
        self._in_fwd: ContextVar[bool] = ContextVar(f"{self._prim.name} fwd", default=False)
        functools.update_wrapper(self, fun)

    def defvjp(self, fwd: Fwd, bwd: Bwd) -> None:
        """Set the forward (with residuals) and backward functions."""
        self.fwd = fwd
        self.bwd = bwd

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Tensor:
        tapes = _ACTIVE.get()
        if self.fwd is None or not tapes or self._in_fwd.get():
            return self.fun(*args, **kwargs)
        # The whole function is one op on the tape. A lone tape never sees its
        # own backward pass, so it skips fwd's inner ops; under nested tapes the
        # outer ones must record how the residuals depend on the inputs, or
        # their gradients of `bwd` would miss that dependence.
        if len(tapes) == 1:
            paused = _ACTIVE.set(())
            try:
                out, residuals = self.fwd(*args, **kwargs)
            finally:
                _ACTIVE.reset(paused)
        else:
            token = self._in_fwd.set(True)
            try:
                out, residuals = self.fwd(*args, **kwargs)
            finally:
                self._in_fwd.reset(token)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"`{self._prim.name}`: fwd must return (output Tensor, residuals), "
                f"got {type(out).__name__} as the output"
            )
        positions = tuple(i for i, a in enumerate(args) if isinstance(a, Tensor))
        inputs = tuple(args[i] for i in positions)
        return emit(self._prim, inputs, out.data, (residuals, positions, len(args)))  # type: ignore[arg-type]

    def _vjp(self, g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], params: Any, needs: tuple[bool, ...]) -> Sequence[Tensor | None]:
        residuals, positions, nargs = params
        assert self.bwd is not None
        cts = self.bwd(residuals, g)
        if not isinstance(cts, tuple | list) or len(cts) != nargs:
            raise TypeError(
                f"`{self._prim.name}`: bwd must return a tuple with one cotangent per "
                f"positional argument ({nargs}), got {cts!r:.80}"
            )
        result: list[Tensor | None] = []
        for i, x in zip(positions, inputs):
            ct = cts[i]
            if ct is not None and not isinstance(ct, Tensor):
                raise TypeError(
                    f"`{self._prim.name}`: bwd returned a {type(ct).__name__} for argument {i}; "
                    "return a Tensor or None"
                )
            result.append(ct)
        return result
