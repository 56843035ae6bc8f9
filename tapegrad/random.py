"""Explicit, reproducible randomness: keys you pass around, as in JAX.

A key is two 64-bit words for NumPy's counter-based Philox generator, so the
same key gives the same numbers on every run, machine and device (values are
drawn on the host, then moved).

>>> from tapegrad import random
>>> k1, k2 = random.split(random.key(0))
>>> random.normal(k1, (2,)).numpy().tolist() == random.normal(k1, (2,)).numpy().tolist()
True
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np
from numpy.typing import DTypeLike

from ._arrays._backend import check_device, default_device, to_device
from ._core._tensor import Tensor
from ._tree import register_leaf


@attrs.frozen
class Key:
    """A random key: two unsigned 64-bit words. Split it; never reuse it."""

    words: tuple[int, int]

    def generator(self) -> np.random.Generator:
        """A NumPy generator whose stream is fixed by this key."""
        return np.random.Generator(np.random.Philox(key=np.array(self.words, dtype=np.uint64)))


register_leaf(Key)


def key(seed: int) -> Key:
    """A key from an integer seed."""
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise TypeError(f"random.key: seed must be an int, got {type(seed).__name__}")
    words = np.random.SeedSequence(int(seed)).generate_state(2, np.uint64)
    return Key((int(words[0]), int(words[1])))


def split(k: Key, num: int = 2) -> tuple[Key, ...]:
    """``num`` new independent keys derived from ``k``."""
    if num < 1:
        raise ValueError(f"random.split: num must be at least 1, got {num}")
    raw = k.generator().bit_generator.random_raw(2 * num)
    return tuple(Key((int(raw[2 * i]), int(raw[2 * i + 1]))) for i in range(num))


def _finish(values: np.ndarray, dtype: DTypeLike, device: str | None) -> Tensor:
    target = default_device() if device is None else check_device(device)
    return Tensor(to_device(values.astype(dtype, copy=False), target))


def normal(
    k: Key, shape: Sequence[int], dtype: DTypeLike = np.float32, device: str | None = None
) -> Tensor:
    """Standard normal samples (drawn in float64, then cast to ``dtype``)."""
    return _finish(k.generator().standard_normal(tuple(shape)), dtype, device)


def uniform(
    k: Key,
    shape: Sequence[int],
    dtype: DTypeLike = np.float32,
    minval: float = 0.0,
    maxval: float = 1.0,
    device: str | None = None,
) -> Tensor:
    """Uniform samples in ``[minval, maxval)``."""
    return _finish(k.generator().uniform(minval, maxval, tuple(shape)), dtype, device)


def permutation(k: Key, n: int) -> np.ndarray:
    """A random permutation of ``range(n)`` as a host int64 array (for shuffling)."""
    return k.generator().permutation(n)
