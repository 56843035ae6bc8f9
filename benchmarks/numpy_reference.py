"""The seed MLP's training step written by hand in NumPy: the speed to match.

No autodiff: the backward pass is derived by hand, every parameter, gradient
and Adam moment lives in one preallocated flat buffer (views per layer), and
every array op writes into preallocated memory. This is what a careful
engineer would write without a framework.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SIZES = (784, 128, 64, 10)


class HandWrittenMLP:
    """Forward, backward and Adam for the 784-128-64-10 ReLU MLP, in place."""

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], batch: int,
                 lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                 xp: Any = np) -> None:
        # xp is NumPy, or CuPy for the same step on a GPU (benchmarks/gpu_step.py).
        self.xp = xp
        dtype = weights[0].dtype
        shapes = [w.shape for w in weights] + [b.shape for b in biases]
        total = sum(int(np.prod(s)) for s in shapes)
        self.flat_p = xp.empty(total, dtype)
        self.flat_g = xp.empty(total, dtype)
        self.m = xp.zeros(total, dtype)
        self.v = xp.zeros(total, dtype)
        self.scratch = xp.empty(total, dtype)
        self.W: list[np.ndarray] = []
        self.gW: list[np.ndarray] = []
        offset = 0
        views_p: list[np.ndarray] = []
        views_g: list[np.ndarray] = []
        for s in shapes:
            n = int(np.prod(s))
            views_p.append(self.flat_p[offset:offset + n].reshape(s))
            views_g.append(self.flat_g[offset:offset + n].reshape(s))
            offset += n
        self.W, self.b = views_p[:3], views_p[3:]
        self.gW, self.gb = views_g[:3], views_g[3:]
        for dst, src in zip(views_p, list(weights) + list(biases)):
            dst[...] = src
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.t = 0
        self.h = [xp.empty((batch, n), dtype) for n in SIZES[1:]]
        self.dh = [xp.empty((batch, n), dtype) for n in SIZES[1:]]
        self.rows = xp.arange(batch)

    def step(self, x: np.ndarray, labels: np.ndarray) -> float:
        """One forward + backward + Adam step; returns the loss."""
        W, b, h, dh, xp = self.W, self.b, self.h, self.dh, self.xp
        xp.matmul(x, W[0], out=h[0]); h[0] += b[0]; xp.maximum(h[0], 0, out=h[0])
        xp.matmul(h[0], W[1], out=h[1]); h[1] += b[1]; xp.maximum(h[1], 0, out=h[1])
        xp.matmul(h[1], W[2], out=h[2]); h[2] += b[2]
        logits = h[2]
        logits -= logits.max(axis=1, keepdims=True)
        xp.exp(logits, out=dh[2])
        sums = dh[2].sum(axis=1, keepdims=True)
        loss = float(xp.log(sums[:, 0]).mean() - logits[self.rows, labels].mean())
        dh[2] /= sums
        dh[2][self.rows, labels] -= 1
        dh[2] *= 1.0 / len(labels)
        xp.matmul(h[1].T, dh[2], out=self.gW[2]); xp.sum(dh[2], axis=0, out=self.gb[2])
        xp.matmul(dh[2], W[2].T, out=dh[1]); dh[1] *= h[1] > 0
        xp.matmul(h[0].T, dh[1], out=self.gW[1]); xp.sum(dh[1], axis=0, out=self.gb[1])
        xp.matmul(dh[1], W[1].T, out=dh[0]); dh[0] *= h[0] > 0
        xp.matmul(x.T, dh[0], out=self.gW[0]); xp.sum(dh[0], axis=0, out=self.gb[0])
        self._adam()
        return loss

    def _adam(self) -> None:
        self.t += 1
        g, m, v, s, xp = self.flat_g, self.m, self.v, self.scratch, self.xp
        b1, b2 = self.b1, self.b2
        c1 = 1.0 - b1**self.t
        c2 = 1.0 - b2**self.t
        m *= b1; xp.multiply(g, 1.0 - b1, out=s); m += s
        v *= b2; xp.multiply(g, g, out=s); s *= 1.0 - b2; v += s
        xp.sqrt(v, out=s); s *= 1.0 / math.sqrt(c2); s += self.eps
        xp.divide(m, s, out=s); s *= -self.lr / c1
        self.flat_p += s

    def parameters(self) -> list[Any]:
        """Copies of the weights and biases, in layer order."""
        return [w.copy() for w in self.W] + [b.copy() for b in self.b]
