"""Codegen: turn a replay's instructions into one straight-line Python function.

Replaying a list of recorded calls in an interpreter loop would cost about
as much Python as the library calls it saves. Generating the source of one
function instead (``v7 = c3(v2, v5, axis=c4)``, one line per call) makes a
replay cost the NumPy calls and little else. Each value is deleted right
after its last use, so a replay holds no more memory than the eager run.

This module only writes code: it changes no instruction. The passes that
rewrite the trace first (``_passes.py``) are run, in order, by
``_replayed.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._arrays._traced import (
    Const,
    Container,
    Instruction,
    Ref,
    Template,
    slots_touched,
    template_slots,
)


class GuardFailed(Exception):
    """A replay took a branch the trace did not; the caller runs the function eagerly."""


class _Source:
    """Names for slots and constants while writing the source."""

    def __init__(self) -> None:
        self.constants: dict[str, Any] = {"_GuardFailed": GuardFailed, "_errstate": np.errstate}
        self._const_names: dict[int, str] = {}

    def const(self, value: Any) -> str:
        # Ints, bools and None read the same as literals; anything else goes
        # in the function's globals (a float's repr may be `nan`, not Python).
        if value is None or type(value) in (bool, int):
            return repr(value)
        name = self._const_names.get(id(value))
        if name is None:
            name = f"c{len(self._const_names)}"
            self._const_names[id(value)] = name
            self.constants[name] = value
        return name

    def expr(self, template: Template) -> str:
        if isinstance(template, Ref):
            return f"v{template.slot}"
        if isinstance(template, Const):
            return self.const(template.value)
        assert isinstance(template, Container)
        if template.kind is dict:
            return "{" + ", ".join(f"{self.const(k)}: {self.expr(t)}" for k, t in template.items) + "}"
        items = ", ".join(self.expr(t) for t in template.items)
        if template.kind is tuple:
            return f"({items},)" if len(template.items) == 1 else f"({items})"
        return f"[{items}]"


def _statement(src: _Source, ins: Instruction) -> str:
    args = [src.expr(a) for a in ins.args]
    if ins.kind == "guard":
        return f"if {'not ' if ins.fn else ''}{args[0]}: raise _GuardFailed"
    if ins.kind == "shape_guard":
        return f"if {args[0]}.shape != {src.const(ins.fn)}: raise _GuardFailed"
    if ins.kind == "dtype_guard":
        return f"if {args[0]}.dtype != {src.const(ins.fn)}: raise _GuardFailed"
    if ins.kind == "setitem":
        return f"{args[0]}[{args[1]}] = {args[2]}"
    if ins.kind == "getitem":
        call = f"{args[0]}[{args[1]}]"
    elif ins.kind == "attribute":
        call = f"{args[0]}.{ins.fn}"
    else:
        params = ", ".join([*(args[1:] if ins.kind == "method" else args),
                            *(f"{k}={src.expr(t)}" for k, t in ins.kwargs)])
        head = f"{args[0]}.{ins.fn}" if ins.kind == "method" else src.const(ins.fn)
        call = f"{head}({params})"
    if not ins.outs:
        return call
    targets = ", ".join(f"v{s}" for s in ins.outs)
    if ins.unpack:
        targets += "," if len(ins.outs) == 1 else ""
        return f"{targets} = {call}"
    return f"{targets} = {call}"


def _last_uses(instructions: Sequence[Instruction]) -> dict[int, int]:
    """For each slot, the index of the last instruction that reads or defines it."""
    last: dict[int, int] = {}
    for i, ins in enumerate(instructions):
        for slot in slots_touched(ins):
            last[slot] = i
    return last


def compile_instructions(
    instructions: Sequence[Instruction],
    input_slots: Sequence[int],
    outputs: Sequence[tuple[Template, Any]],
    name: str,
) -> tuple[Callable[..., tuple[Any, ...]], str]:
    """The replay function named ``name`` that runs ``instructions``, and its source.

    It takes the arrays of ``input_slots``, positionally, and returns a tuple
    with one entry per ``(template, wrapper)`` in ``outputs``: the value,
    passed through ``wrapper`` (for example `Tensor`) unless that is ``None``.
    The instructions run as they are, in order: rewriting them is the passes'
    work, done before.
    """
    src = _Source()
    kept: set[int] = set()
    for t, _ in outputs:
        template_slots(t, kept)
    last = _last_uses(instructions)
    lines = []
    for slot in input_slots:  # inputs never used still go at once
        if slot not in last and slot not in kept:
            lines.append(f"del v{slot}")
    dying_at: dict[int, list[int]] = {}
    for slot, i in last.items():
        if slot not in kept:
            dying_at.setdefault(i, []).append(slot)
    errstate = None
    for i, ins in enumerate(instructions):
        # Ops that ran under np.errstate(...) replay under the same state, so
        # they warn (or raise) exactly as the eager call did.
        if ins.errstate != errstate:
            errstate = ins.errstate
            if errstate is not None:
                state = ", ".join(f"{k}={v!r}" for k, v in errstate)
                lines.append(f"with _errstate({state}):")
        indent = "" if errstate is None else "    "
        lines.append(indent + _statement(src, ins))
        if i in dying_at:
            lines.append(indent + "del " + ", ".join(f"v{s}" for s in sorted(dying_at[i])))
    results = ", ".join(
        src.expr(t) if wrapper is None else f"{src.const(wrapper)}({src.expr(t)})" for t, wrapper in outputs
    )
    lines.append(f"return ({results}{',' if len(outputs) == 1 else ''})")
    params = ", ".join(f"v{s}" for s in input_slots)
    source = f"def {name}({params}):\n" + "".join(f"    {line}\n" for line in lines)
    namespace = dict(src.constants)
    exec(compile(source, f"<replay of {name}>", "exec"), namespace)  # noqa: S102 - our own source
    return namespace[name], source
