"""Primitives: the ops that own a vector-Jacobian rule, and their registry.

Every other op is a composition of these and needs no rule of its own. A rule
is written once, with tapegrad ops on tensors, so when an outer tape is
recording, the backward pass is itself recorded, and gradients of gradients work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

if TYPE_CHECKING:
    from ._tensor import Tensor

#: What a rule returns: one cotangent per input, ``None`` where none is needed.
Grads: TypeAlias = "Sequence[Tensor | None]"

#: ``rule(g, out, inputs, params, needs) -> one cotangent per input``.
#:
#: ``g`` is the cotangent of ``out``; ``needs[i]`` says whether input ``i`` wants a
#: gradient (skip the work, and return ``None``, when it does not). A cotangent may
#: have the broadcast shape of ``out``: the tape reduces it to the input's shape, in
#: one place, for every rule. A `Callable` rather than a `Protocol`, so that mypy infers
#: the parameter types of a rule written as a lambda in `primitive`'s call, and checks
#: its body (a `Protocol` lets a lambda's parameters be `Any`).
VJPRule: TypeAlias = "Callable[[Tensor, Tensor, tuple[Tensor, ...], Any, tuple[bool, ...]], Grads]"


@attrs.frozen
class Primitive:
    """An op with a name and a vector-Jacobian rule."""

    name: str
    vjp: VJPRule


#: Every built-in primitive by name; the test suite checks that each has a case.
PRIMITIVES: dict[str, Primitive] = {}


def primitive(name: str, vjp: VJPRule) -> Primitive:
    """Create a built-in primitive and add it to `PRIMITIVES`.

    A rule that is one expression is written in the call, as HIPS autograd's
    ``defvjp`` table is: ``NEG = primitive("neg", lambda g, out, inputs, p, needs: (neg(g),))``.
    """
    if name in PRIMITIVES:
        raise ValueError(f"primitive {name!r} is already registered")
    prim = Primitive(name, vjp)
    PRIMITIVES[name] = prim
    return prim
