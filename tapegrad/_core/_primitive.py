"""Primitives: the ops that own a vector-Jacobian rule, and their registry.

Every other op is a composition of these and needs no rule of its own. A rule
is written with tapegrad ops on tensors, so when an outer tape is recording,
the backward pass is itself recorded, and gradients of gradients work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from ._tensor import Tensor


class VJPRule(Protocol):
    """``rule(g, out, inputs, params, needs) -> one cotangent per input``.

    ``g`` is the cotangent of ``out``; ``needs[i]`` says whether input ``i``
    wants a gradient (skip the work, and return ``None``, when it does not).
    A cotangent may have the broadcast shape of ``out``: the tape reduces it
    to the input's shape, in one place, for every rule.
    """

    def __call__(
        self,
        g: Tensor,
        out: Tensor,
        inputs: tuple[Tensor, ...],
        params: Any,
        needs: tuple[bool, ...],
        /,
    ) -> Sequence[Tensor | None]: ...


@attrs.frozen
class Primitive:
    """An op with a name and a vector-Jacobian rule."""

    name: str
    vjp: VJPRule


#: Every built-in primitive by name; the test suite checks that each has a case.
PRIMITIVES: dict[str, Primitive] = {}


def primitive(name: str, vjp: VJPRule) -> Primitive:
    """Create a built-in primitive and add it to `PRIMITIVES`."""
    if name in PRIMITIVES:
        raise ValueError(f"primitive {name!r} is already registered")
    prim = Primitive(name, vjp)
    PRIMITIVES[name] = prim
    return prim
