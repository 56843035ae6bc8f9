"""How the op table's rows describe their inputs, and how each kind of test draws them.

A row names a `Domain` for each input of a pointwise op, or gives a sampler that
draws the inputs of a structured one. The gradient checks run on fixed float64
tensors from one seeded generator (`fixed`, `randn`, ...); the property tests and
the PyTorch parity tests draw with Hypothesis, through `Draws`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeVar

import attrs
import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import strategies as st

import tapegrad as tg
from tapegrad import Tensor

T = TypeVar("T")
Shape = tuple[int, ...]
Array = np.ndarray[Any, np.dtype[Any]]
DType = type[np.floating[Any]]
FLOATS: list[DType] = [np.float32, np.float64]
# The largest side a drawn shape may have (the property tests drew up to 3, the parity tests up to 4).
MAX_SIDE = 4


class Domain(enum.Enum):
    """Where an input's values lie, and why."""

    REAL = "real"  # anywhere in [-3, 3]
    POSITIVE = "positive"  # log, sqrt and the base of a tensor power
    NONZERO = "nonzero"  # denominators: 1/x has a pole at 0
    SMOOTH = "smooth"  # off the kinks at 0, -0.5 and 1.0 (abs, relu, clip's bounds)
    GRID = "grid"  # maximum's left operand, a max's input: values that can be told apart
    OFF_GRID = "off-grid"  # maximum's right operand: never equal to a GRID value


# Domains that only keep away from a kink or a tie. Finite differences need that distance;
# PyTorch parity does not, where the row says our subgradient there is PyTorch's.
KINKS = frozenset({Domain.SMOOTH, Domain.GRID, Domain.OFF_GRID})


@attrs.frozen
class Sample:
    """Drawn inputs for one call, ``fn(*arrays, *params)``.

    Floating arrays are differentiated; other arrays (a boolean condition) are
    held fixed, and ``params`` (an axis, a shape, an index) are passed as they are.
    """

    arrays: tuple[Array, ...]
    params: tuple[Any, ...] = ()


@attrs.frozen
class GradCase:
    """One fixed gradient check: ``fn(*args)``, with an id for the test report."""

    id: str
    fn: Callable[..., Tensor]
    args: tuple[Any, ...]
    # Casts to float32 lose digits, so they need a wider step and looser tolerance.
    eps: float = 1e-6
    tol: float = 1e-5


# ---- fixed inputs, for the gradient checks ----------------------------------------------
# One generator, drawn in the table's order when it is imported (as the old per-module table
# was), so every check sees the same arrays on every run.
_rng = np.random.default_rng(20240601)


def randn(*shape: int) -> Tensor:
    """Standard normal values."""
    return tg.tensor(_rng.standard_normal(shape))


def positive(*shape: int) -> Tensor:
    """Values in [0.5, 2]: safe for log, sqrt, division and a tensor exponent's base."""
    return tg.tensor(_rng.uniform(0.5, 2.0, shape))


def nonzero(*shape: int) -> Tensor:
    """Values with 0.3 <= |x| <= 2: away from the kink of abs and the pole of 1/x."""
    signs = _rng.choice([-1.0, 1.0], shape)
    return tg.tensor(signs * _rng.uniform(0.3, 2.0, shape))


def distinct(*shape: int) -> Tensor:
    """Values on a grid of step 0.1, all different: maxima and minima have no ties."""
    grid = np.arange(-20, 21) * 0.1
    return tg.tensor(_rng.choice(grid, int(np.prod(shape)), replace=False).reshape(shape))


def off_grid(*shape: int) -> Tensor:
    """Like `distinct`, shifted half a step: never equal to a `distinct` value."""
    return distinct(*shape) + 0.05


_FIXED: dict[Domain, Callable[..., Tensor]] = {
    Domain.REAL: randn,
    Domain.POSITIVE: positive,
    Domain.NONZERO: nonzero,
    Domain.SMOOTH: nonzero,
    Domain.GRID: distinct,
    Domain.OFF_GRID: off_grid,
}

# Shape pairs that broadcast, 0-d included, and the shapes of one operand.
BROADCAST_PAIRS: list[tuple[Shape, Shape]] = [
    ((), ()),
    ((3,), ()),
    ((), (2, 3)),
    ((2, 3), (3,)),
    ((2, 1), (1, 3)),
    ((4, 1, 3), (2, 1)),
]
UNARY_SHAPES: list[Shape] = [(), (3,), (2, 3)]


def pointwise_cases(name: str, fn: Callable[..., Tensor], domains: tuple[Domain, ...]) -> tuple[GradCase, ...]:
    """Gradient checks of a pointwise op at every shape in `UNARY_SHAPES` or `BROADCAST_PAIRS`."""
    if len(domains) == 1:
        return tuple(GradCase(f"{name}{s}", fn, (_FIXED[domains[0]](*s),)) for s in UNARY_SHAPES)
    if len(domains) == 2:
        a, b = (_FIXED[d] for d in domains)
        return tuple(GradCase(f"{name}{sa}{sb}", fn, (a(*sa), b(*sb))) for sa, sb in BROADCAST_PAIRS)
    raise ValueError(f"pointwise_cases: {name} has {len(domains)} domains; write its cases out")


# ---- drawn inputs, for the property and parity tests ------------------------------------
class Draw(Protocol):
    """`data.draw`: a strategy in, one of its values out."""

    def __call__(self, strategy: st.SearchStrategy[T], /) -> T: ...


def _grid(step: float, offset: float = 0.0) -> st.SearchStrategy[float]:
    """Multiples of ``step`` in [-5, 5] plus ``offset``: exact in float32, no accidental ties."""
    n = int(5 / step)
    return st.integers(-n, n).map(lambda k: k * step + offset)


def elements(domain: Domain, dtype: DType) -> st.SearchStrategy[float]:
    """The values of one array element in ``domain``, representable in ``dtype``."""
    width: Literal[32, 64] = 32 if dtype == np.float32 else 64
    if domain is Domain.POSITIVE:  # from 0.1 as float32 holds it (a hair above 0.1)
        return st.floats(float(np.float32(0.1)), 3.0, width=width)
    if domain is Domain.NONZERO:
        return st.floats(0.25, 3.0, width=width) | st.floats(-3.0, -0.25, width=width)
    if domain is Domain.GRID:
        return _grid(0.25)
    if domain in (Domain.SMOOTH, Domain.OFF_GRID):  # never 0, -0.5 or 1.0, nor a GRID value
        return _grid(0.25, 0.125)
    # float64 draws no subnormals: PyTorch and NumPy may round them differently.
    return st.floats(-3.0, 3.0, width=width, allow_subnormal=width == 32)


@attrs.frozen
class Draws:
    """Hypothesis's `data.draw`, with the ways the table's samplers draw arrays, shapes and axes.

    ``at_kinks`` is for PyTorch parity of an op whose subgradient at a kink or a tie is
    PyTorch's: the domains in `KINKS` then draw from the whole real line, ties included.
    """

    draw: Draw
    at_kinks: bool = False

    def __call__(self, strategy: st.SearchStrategy[T], /) -> T:
        return self.draw(strategy)

    def array(self, shape: Shape, dtype: DType, domain: Domain = Domain.REAL, unique: bool = False) -> Array:
        """An array of ``shape`` and ``dtype`` with values in ``domain``."""
        if self.at_kinks and domain in KINKS:
            domain, unique = Domain.REAL, False
        return np.asarray(self.draw(hnp.arrays(dtype, shape, elements=elements(domain, dtype), unique=unique)))

    def shape(self, min_dims: int = 0, min_side: int = 0) -> Shape:
        """A shape of up to 3 axes, size 0 included unless ``min_side`` says otherwise."""
        return self.draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=min_side, max_side=MAX_SIDE))

    def shapes(self, n: int, min_side: int = 0) -> tuple[Shape, ...]:
        """``n`` shapes that broadcast together."""
        drawn = self.draw(
            hnp.mutually_broadcastable_shapes(num_shapes=n, max_dims=3, min_side=min_side, max_side=MAX_SIDE)
        )
        return tuple(drawn.input_shapes)

    def axes(self, ndim: int) -> int | tuple[int, ...] | None:
        """An ``axis`` argument of a reduction: None, one axis, or several (maybe none)."""
        if ndim == 0:
            return self.draw(st.sampled_from([None, 0, -1]))
        single = st.integers(-ndim, ndim - 1)
        several = st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim).map(tuple)
        return self.draw(st.none() | single | several)


Sampler = Callable[[Draws, DType], Sample]


def pointwise(*domains: Domain) -> Sampler:
    """Draws for a pointwise op: one array per domain, in shapes that broadcast together."""

    def sample(d: Draws, dtype: DType) -> Sample:
        shapes = (d.shape(),) if len(domains) == 1 else d.shapes(len(domains))
        return Sample(tuple(d.array(s, dtype, domain) for s, domain in zip(shapes, domains)))

    return sample
