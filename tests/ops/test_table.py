"""The op table's one meta-test: every registered primitive has exactly one row, and every row
names a primitive and brings at least one gradient check."""

from __future__ import annotations

from collections import Counter

import tapegrad as tg

from .table import ROWS


def test_every_primitive_has_one_row() -> None:
    names = [row.name for row in ROWS]
    missing = sorted(set(tg.PRIMITIVES) - set(names))
    stale = sorted(set(names) - set(tg.PRIMITIVES))
    twice = sorted(name for name, n in Counter(names).items() if n > 1)
    unchecked = [row.name for row in ROWS if not row.grad]
    assert missing == [], (
        f"primitives without a row in tests/ops/table.py: {missing}; add one row per primitive to ROWS "
        "(elementwise(name, tg_fn, np_fn, torch_fn, *domains) for a pointwise op)"
    )
    assert stale == [], f"rows in tests/ops/table.py that name no primitive in tapegrad.PRIMITIVES: {stale}"
    assert twice == [], f"primitives with more than one row in tests/ops/table.py: {twice}"
    assert unchecked == [], f"rows without a gradient case (Op.grad is empty): {unchecked}"
