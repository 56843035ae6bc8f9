"""Losses. Cross-entropy is fused for numerical stability (log-sum-exp)."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import numpy as np

from .._arrays._backend import array_module, zeros_for
from .._core._custom_vjp import custom_vjp
from .._core._reduce import softmax
from .._core._record import is_recording
from .._core._tensor import Tensor, wrap
from .._arrays._traced import concrete

Reduction: TypeAlias = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`{op}`: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_cross_entropy_args(logits: Any, labels: Any, reduction: str) -> None:
    _check_reduction("cross_entropy", reduction)
    if not isinstance(logits, Tensor):
        raise TypeError(f"`cross_entropy`: logits must be a Tensor, got {type(logits).__name__}")
    if not isinstance(labels, Tensor):
        raise TypeError(
            f"`cross_entropy`: labels must be an integer Tensor, got {type(labels).__name__}; "
            "wrap them with tapegrad.tensor(...)"
        )
    if logits.ndim != 2 or logits.dtype.kind != "f":
        raise ValueError(
            f"`cross_entropy`: logits must be a floating (batch, classes) tensor, got shape "
            f"{logits.shape} and dtype {logits.dtype}"
        )
    if labels.dtype.kind not in "iu":
        raise TypeError(
            f"`cross_entropy`: labels must be integer class indices, got dtype {labels.dtype}; "
            "convert them with labels.astype('int64')"
        )
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"`cross_entropy`: labels have shape {labels.shape} but logits have shape "
            f"{logits.shape}; expected labels of shape ({logits.shape[0]},), one class per row"
        )
    classes = logits.shape[1]
    # Truth tests, not int(): under `replay` a truth test becomes a guard,
    # while reading the value out would stop the trace.
    if labels.size and ((labels.data.min() < 0) or (labels.data.max() >= classes)):
        lo, hi = int(concrete(labels.data).min()), int(concrete(labels.data).max())
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"`cross_entropy`: label {bad} is outside [0, {classes}) for logits with "
            f"{classes} classes"
        )


def _reduce(per_example: Any, reduction: str) -> Any:
    if reduction == "mean":
        return per_example.mean()
    if reduction == "sum":
        return per_example.sum()
    return per_example


def _cross_entropy_fwd(
    logits: Tensor, labels: Tensor, reduction: Reduction = "mean"
) -> tuple[Tensor, tuple[Tensor, Tensor, Any, str]]:
    _check_cross_entropy_args(logits, labels, reduction)
    x = logits.data
    xp = array_module(x)
    m = x.max(axis=1, keepdims=True)
    top = m == xp.inf
    shifted = x - xp.where(xp.isfinite(m), m, 0)  # an all -inf row: no shift
    if top.any():  # +inf logits take all the probability (the limit), with no nan
        shifted = xp.where(top & (x == xp.inf), 0.0, xp.where(top, -xp.inf, shifted))
    e = xp.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    rows = xp.arange(x.shape[0])
    # An all -inf row has no distribution: its loss and probabilities are nan,
    # as in PyTorch, without NumPy's warnings.
    with np.errstate(divide="ignore", invalid="ignore"):
        per_example = xp.log(s[:, 0]) - shifted[rows, labels.data]
        probs = e / s
    return wrap(_reduce(per_example, reduction)), (logits, labels, probs, reduction)


def _cross_entropy_primal(logits: Tensor, labels: Tensor, reduction: Reduction = "mean") -> Tensor:
    return _cross_entropy_fwd(logits, labels, reduction)[0]


cross_entropy = custom_vjp(_cross_entropy_primal)
cross_entropy.__doc__ = """Softmax cross-entropy of ``logits`` (batch, classes) against integer ``labels``.

Fused for numerical stability: the log-sum-exp subtracts each row's maximum,
so logits of +-1000 stay finite. A row with +inf logits is the limit: its
+inf logits share the probability, so the loss is 0 (or inf if the label's
logit is finite) and the gradient finite; an all -inf row gives nan. The gradient is ``(softmax - one_hot) / batch``
for the default ``reduction="mean"``; ``"sum"`` and ``"none"`` are offered too.

>>> import tapegrad as tg
>>> logits = tg.tensor([[1000.0, -1000.0], [0.0, 0.0]])
>>> round(tg.nn.cross_entropy(logits, tg.tensor([0, 1])).item(), 4)
0.3466
"""


def _cross_entropy_bwd(res: tuple[Tensor, Tensor, Any, str], g: Tensor) -> tuple[Tensor, None]:
    logits, labels, probs_raw, reduction = res
    n = logits.shape[0]
    xp = array_module(probs_raw)
    rows = xp.arange(n)
    if not is_recording():
        # Nothing differentiates this rule: (softmax - one_hot) * g in place,
        # on a copy of the saved softmax, is two passes and a scatter.
        diff_raw = probs_raw.copy()
        diff_raw[rows, labels.data] -= 1
        if reduction == "none":
            diff_raw *= g.data.reshape(n, 1)
        else:
            diff_raw *= g.data / n if reduction == "mean" else g.data
        return (Tensor(diff_raw), None)
    # zeros_for: under `replay`, a buffer the trace owns, so the traced labels can index it.
    one_hot = zeros_for(logits.shape, logits.dtype, logits.data, (rows, labels.data))
    one_hot[rows, labels.data] = 1
    # Under an outer tape, recompute softmax from the logits so that the
    # second derivative sees its dependence on them.
    diff = softmax(logits, axis=1) - Tensor(one_hot)
    if reduction == "mean":
        return (diff * (g / n), None)
    if reduction == "sum":
        return (diff * g, None)
    return (diff * g.reshape(n, 1), None)


cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def mse(prediction: Tensor, target: Tensor, reduction: Reduction = "mean") -> Tensor:
    """Mean squared error. Shapes must match exactly: nothing is broadcast.

    >>> import tapegrad as tg
    >>> tg.nn.mse(tg.tensor([1.0, 2.0]), tg.tensor([0.0, 0.0])).item()
    2.5
    """
    _check_reduction("mse", reduction)
    for name, value in (("prediction", prediction), ("target", target)):
        if not isinstance(value, Tensor):
            raise TypeError(f"`mse`: {name} must be a Tensor, got {type(value).__name__}")
    if prediction.shape != target.shape:
        raise ValueError(
            f"`mse`: prediction has shape {prediction.shape} but target has shape "
            f"{target.shape}; reshape one so they match (mse never broadcasts)"
        )
    diff = prediction - target
    sq = diff * diff
    if reduction == "mean":
        return sq.mean()
    if reduction == "sum":
        return sq.sum()
    return sq
