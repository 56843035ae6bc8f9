"""Small helpers shared by several test modules (not a test module itself)."""

from __future__ import annotations

import sys


def line_after() -> int:
    """The number of the caller's next line (where the failing op is written)."""
    return sys._getframe(1).f_lineno + 1
