"""The parts of cupyx that tapegrad calls."""

from typing import Any

from numpy.typing import NDArray

def scatter_add(a: NDArray[Any], slices: Any, value: Any) -> None: ...
