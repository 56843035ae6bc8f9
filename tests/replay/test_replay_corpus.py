"""A corpus of training steps people write, replayed bit for bit like the eager run.

Each case is a small model whose loss uses one pattern that once broke
`tg.replay` (mostly indexing whose backward pass depends on the data: the
scatter of a gradient into zeros at traced indices), trained for 20 steps
eagerly and replayed, with and without donation. Every loss and every final
parameter must be the same bits, and the replayed runs must really replay
(no eager fallbacks where no branch flips).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import pytest

import tapegrad as tg
from tapegrad import Tensor, nn, optim

import _support

STEPS = 20
Array = np.ndarray[Any, Any]
Loss = Callable[[Any, Tensor, Any], Tensor]  # labels are a Tensor, or a raw array (raw_labels)


@attrs.frozen
class Case:
    """One training step: parameters, batches and a loss; the optimizer to use."""

    params: Any
    batches: list[tuple[Array, Array]]
    loss: Loss
    opt: optim.Optimizer
    #: Value-dependent shapes (a boolean mask on the weights) may flip a guard.
    may_fall_back: bool = False
    #: The labels go in as the raw integer array, not wrapped in a Tensor.
    raw_labels: bool = False


def _f64(rng: np.random.Generator, *shape: int) -> Tensor:
    return tg.tensor(rng.normal(size=shape) * 0.3)


def _classes(rng: np.random.Generator, n: int, k: int, features: int) -> list[tuple[Array, Array]]:
    return [(rng.normal(size=(n, features)), rng.integers(0, k, size=n)) for _ in range(STEPS)]


def _tokens(rng: np.random.Generator, n: int, t: int, vocab: int) -> list[tuple[Array, Array]]:
    return [(rng.integers(0, vocab, size=(n, t)), rng.integers(0, vocab, size=n)) for _ in range(STEPS)]


def _nll(logits: Tensor, y: Tensor) -> Tensor:
    """The JAX idiom: pick each row's log-probability with integer arrays."""
    logp = tg.log_softmax(logits, axis=-1)
    return -logp[np.arange(logits.shape[0]), y].mean()


def nll_fancy_index() -> Case:
    rng = np.random.default_rng(1)
    return Case({"w": _f64(rng, 6, 4)}, _classes(rng, 8, 4, 6),
                lambda p, x, y: _nll(x @ p["w"], y), optim.sgd(0.1))


def log_loss() -> Case:
    rng = np.random.default_rng(2)
    return Case({"w": _f64(rng, 6, 4), "b": _f64(rng, 4)}, _classes(rng, 8, 4, 6),
                lambda p, x, y: _support.log_loss(x @ p["w"] + p["b"], y), optim.adam(1e-2))


def embedding_lookup() -> Case:
    rng = np.random.default_rng(3)

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        h = p["E"][x].mean(axis=1)  # (n, t, d) -> (n, d)
        return nn.cross_entropy(h @ p["W"], y)

    return Case({"E": _f64(rng, 10, 5), "W": _f64(rng, 5, 10)}, _tokens(rng, 6, 3, 10), loss, optim.adam(1e-2))


def tied_embedding() -> Case:
    rng = np.random.default_rng(4)

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        h = tg.tanh(p["E"][x].sum(axis=1))
        return nn.cross_entropy(h @ p["E"].T, y)  # the output layer is the embedding, transposed

    return Case({"E": _f64(rng, 10, 5)}, _tokens(rng, 6, 3, 10), loss, optim.sgd(0.2, momentum=0.9))


def split_features() -> Case:
    rng = np.random.default_rng(5)

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        h = x @ p["w"]
        a, b = h[:, :4], h[:, 4:]
        return nn.cross_entropy(tg.tanh(a) * tg.sigmoid(b), y)

    return Case({"w": _f64(rng, 6, 8)}, _classes(rng, 8, 4, 6), loss, optim.adam(1e-2))


def weight_slice_matmul() -> Case:
    rng = np.random.default_rng(6)
    return Case({"w": _f64(rng, 2, 3, 6, 4)}, _classes(rng, 8, 4, 6),
                lambda p, x, y: nn.cross_entropy(x @ p["w"][0, 0], y) + (x @ p["w"][1, 2]).sum() * 0.01,
                optim.sgd(0.1))


def shifted_slice_conv() -> Case:
    rng = np.random.default_rng(7)
    width, taps = 12, 3

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        out = width - taps + 1
        conv = tg.stack([x[:, k:k + out] * p["k"][k] for k in range(taps)]).sum(axis=0)
        return nn.cross_entropy(nn.relu(conv) @ p["w"], y)

    return Case({"k": _f64(rng, taps), "w": _f64(rng, width - taps + 1, 3)}, _classes(rng, 8, 3, width),
                loss, optim.adam(1e-2))


def masked_weights() -> Case:
    rng = np.random.default_rng(8)

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        w: Tensor = p["w"]
        return nn.cross_entropy(x @ w, y) + 0.01 * w[w > 0].sum()

    return Case({"w": _f64(rng, 6, 4)}, _classes(rng, 8, 4, 6), loss, optim.sgd(0.1), may_fall_back=True)


def causal_attention() -> Case:
    rng = np.random.default_rng(9)
    t, d = 5, 4

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        h = p["E"][x]  # (n, t, d)
        q, k, v = h @ p["q"], h @ p["k"], h @ p["v"]
        scores = q @ tg.swapaxes(k, -1, -2) * (1.0 / np.sqrt(d))
        causal = np.tril(np.ones((t, t), dtype=bool))
        scores = tg.where(causal, scores, -1e9)
        out = tg.softmax(scores, axis=-1) @ v
        return nn.cross_entropy(out[:, -1, :] @ p["o"], y)

    params = {n: _f64(rng, d, d) for n in "qkv"} | {"E": _f64(rng, 7, d), "o": _f64(rng, d, 7)}
    return Case(params, _tokens(rng, 3, t, 7), loss, optim.adam(1e-2))


def multi_head_reshape() -> Case:
    rng = np.random.default_rng(10)
    n, t, heads, hd = 3, 4, 2, 3

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        h: Tensor = p["E"][x] @ p["qkv"]  # (n, t, 3 * heads * hd)
        q, k, v = (tg.permute(h[..., i * heads * hd:(i + 1) * heads * hd].reshape((n, t, heads, hd)),
                              (0, 2, 1, 3)) for i in range(3))
        att = tg.softmax(q @ tg.swapaxes(k, -1, -2), axis=-1) @ v  # (n, heads, t, hd)
        merged = tg.permute(att, (0, 2, 1, 3)).reshape((n, t, heads * hd))
        return nn.cross_entropy(merged.mean(axis=1) @ p["o"], y)

    params = {"E": _f64(rng, 8, 6), "qkv": _f64(rng, 6, 3 * heads * hd), "o": _f64(rng, heads * hd, 8)}
    return Case(params, _tokens(rng, n, t, 8), loss, optim.adam(1e-2))


def layer_norm_from_ops() -> Case:
    rng = np.random.default_rng(11)

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        h = x @ p["w"]
        mu = h.mean(axis=-1, keepdims=True)
        var = ((h - mu) ** 2).mean(axis=-1, keepdims=True)
        normed = (h - mu) / tg.sqrt(var + 1e-5) * p["gamma"] + p["beta"]
        return nn.cross_entropy(normed, y)

    params = {"w": _f64(rng, 6, 4), "gamma": tg.tensor(np.ones(4)), "beta": tg.tensor(np.zeros(4))}
    return Case(params, _classes(rng, 8, 4, 6), loss, optim.adam(1e-2))


def two_losses() -> Case:
    rng = np.random.default_rng(12)

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        w: Tensor = p["w"]
        logits = x @ w
        return nn.cross_entropy(logits, y) + 0.5 * _nll(logits, y) + 1e-3 * (w ** 2).sum()

    return Case({"w": _f64(rng, 6, 4)}, _classes(rng, 8, 4, 6), loss, optim.sgd(0.05, momentum=0.9, nesterov=True))


def short_last_batch() -> Case:
    rng = np.random.default_rng(13)
    batches = _classes(rng, 8, 4, 6)
    x, y = batches[-1]
    batches[-1] = (x[:5], y[:5])  # a new signature: retraced, still exact
    return Case({"w": _f64(rng, 6, 4)}, batches, lambda p, x, y: _nll(x @ p["w"], y), optim.adam(1e-2))


def mlp(opt: optim.Optimizer, seed: int) -> Case:
    model = nn.MLP((6, 8, 4))
    params = model.init(tg.random.key(seed))
    params = tg.tree.map(lambda t: tg.tensor(np.asarray(t.data, dtype=np.float64)), params)
    rng = np.random.default_rng(seed)
    return Case(params, _classes(rng, 8, 4, 6), lambda p, x, y: nn.cross_entropy(model.apply(p, x), y), opt)


def concat_branches() -> Case:
    rng = np.random.default_rng(14)

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        h = tg.concatenate([nn.relu(x @ p["a"]), tg.tanh(x @ p["b"])], axis=1)
        picked = h[:, np.array([0, 2, 2, 5])]  # repeated columns accumulate on the way back
        return nn.cross_entropy(picked, y)

    return Case({"a": _f64(rng, 6, 3), "b": _f64(rng, 6, 3)}, _classes(rng, 8, 4, 6), loss, optim.adam(1e-2))


def gather_rows_by_label() -> Case:
    rng = np.random.default_rng(15)

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        centres: Tensor = p["c"][y]  # (n, features): a centre loss, indexed by the labels
        return ((x - centres) ** 2).mean() + nn.cross_entropy(x @ p["w"], y)

    return Case({"c": _f64(rng, 4, 6), "w": _f64(rng, 6, 4)}, _classes(rng, 8, 4, 6), loss, optim.sgd(0.1))


def constant_table_lookup() -> Case:
    rng = np.random.default_rng(16)
    table = rng.normal(size=(10, 5))  # fixed features (pretrained, frozen): a constant of the trace

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        features = tg.tensor(table)[x].mean(axis=1)  # a constant indexed at traced tokens
        one_hot = tg.tensor(np.eye(10))[y]
        return -(tg.log_softmax(features @ p["W"], axis=-1) * one_hot).sum(axis=-1).mean()

    return Case({"W": _f64(rng, 5, 10)}, _tokens(rng, 6, 3, 10), loss, optim.sgd(0.1))


def raw_int_labels() -> Case:
    rng = np.random.default_rng(17)

    def loss(p: Any, x: Tensor, y: Any) -> Tensor:
        logits = x @ p["w"]  # y is the raw int64 array: wrapped inside, and used as an index
        return nn.cross_entropy(logits, tg.tensor(y)) + _nll(logits, y)

    return Case({"w": _f64(rng, 6, 4)}, _classes(rng, 8, 4, 6), loss, optim.adam(1e-2), raw_labels=True)


def class_weights_add_at() -> Case:
    rng = np.random.default_rng(18)

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        logits = x @ p["w"]
        counts = np.zeros_like(logits.data[0])  # owned by the trace: made from a traced array
        np.add.at(counts, y.data, 1.0)  # counts[y] += 1, repeats accumulating
        weights = 1.0 / counts[y.data]  # rare classes of the batch weigh more
        per_example: Tensor = nn.cross_entropy(logits, y, reduction="none")
        weighted: Tensor = (per_example * weights).mean()
        return weighted

    return Case({"w": _f64(rng, 6, 4)}, _classes(rng, 8, 4, 6), loss, optim.sgd(0.1))


def label_smoothing_setitem() -> Case:
    rng = np.random.default_rng(19)

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        logits = x @ p["w"]
        target = np.zeros_like(logits.data)
        target[np.arange(8), y.data] = 1.0  # one-hot written at traced labels
        smoothed = tg.Tensor(target * 0.9 + 0.1 / 4)
        return -(tg.log_softmax(logits, axis=-1) * smoothed).sum(axis=-1).mean()

    return Case({"w": _f64(rng, 6, 4)}, _classes(rng, 8, 4, 6), loss, optim.adam(1e-2))


def gradient_penalty() -> Case:
    rng = np.random.default_rng(20)

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        with tg.Tape() as inner:  # cross_entropy's rule, differentiated again by the outer tape
            ce: Tensor = nn.cross_entropy(x @ p["w"], y)
        g = inner.gradient(ce, p)
        penalised: Tensor = ce + 0.1 * (g["w"] ** 2).sum()
        return penalised

    return Case({"w": _f64(rng, 6, 4)}, _classes(rng, 8, 4, 6), loss, optim.sgd(0.1))


def unrolled_rnn() -> Case:
    rng = np.random.default_rng(21)

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        h = tg.tensor(np.zeros((8, 4)))
        for t in range(3):  # one time step per pair of columns
            h = tg.tanh(x[:, 2 * t:2 * t + 2] @ p["u"] + h @ p["w"])
        return nn.cross_entropy(h, y)

    return Case({"u": _f64(rng, 2, 4), "w": _f64(rng, 4, 4)}, _classes(rng, 8, 4, 6), loss, optim.adam(1e-2))


def max_pool_reshape() -> Case:
    rng = np.random.default_rng(22)

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        pooled = (x @ p["w"]).reshape((8, 4, 2)).max(axis=2)  # the gradient picks each pair's winner
        return nn.cross_entropy(pooled, y)

    return Case({"w": _f64(rng, 6, 8)}, _classes(rng, 8, 4, 6), loss, optim.sgd(0.1))


def float32_batches(rng: np.random.Generator) -> list[tuple[Array, Array]]:
    return [(x.astype(np.float32), y) for x, y in _classes(rng, 8, 4, 6)]


def gelu_mlp_float32() -> Case:
    model = nn.MLP((6, 8, 4), activation=nn.GELU)  # float32, as the library's default
    params = model.init(tg.random.key(23))
    rng = np.random.default_rng(23)
    return Case(params, float32_batches(rng), lambda p, x, y: nn.cross_entropy(model.apply(p, x), y),
                optim.adam(1e-2))


def float32_embedding_nll() -> Case:
    rng = np.random.default_rng(24)

    def loss(p: Any, x: Tensor, y: Tensor) -> Tensor:
        return _nll(p["E"][x].mean(axis=1) @ p["W"], y)

    params = {"E": tg.tensor(rng.normal(size=(10, 5)).astype(np.float32)),
              "W": tg.tensor(rng.normal(size=(5, 10)).astype(np.float32))}
    return Case(params, _tokens(rng, 6, 3, 10), loss, optim.sgd(0.1, momentum=0.9))


CASES: dict[str, Callable[[], Case]] = {
    "nll-fancy-index": nll_fancy_index,
    "nn-log-loss": log_loss,
    "embedding-lookup": embedding_lookup,
    "tied-embedding": tied_embedding,
    "split-features": split_features,
    "weight-slice-matmul": weight_slice_matmul,
    "shifted-slice-conv": shifted_slice_conv,
    "masked-weights": masked_weights,
    "causal-attention": causal_attention,
    "multi-head-reshape": multi_head_reshape,
    "layer-norm-from-ops": layer_norm_from_ops,
    "two-losses": two_losses,
    "short-last-batch": short_last_batch,
    "mlp-sgd": lambda: mlp(optim.sgd(0.1), 0),
    "mlp-adam": lambda: mlp(optim.adam(1e-2), 1),
    "concat-branches": concat_branches,
    "gather-rows-by-label": gather_rows_by_label,
    "constant-table-lookup": constant_table_lookup,
    "raw-int-labels": raw_int_labels,
    "class-weights-add-at": class_weights_add_at,
    "label-smoothing-setitem": label_smoothing_setitem,
    "gradient-penalty": gradient_penalty,
    "unrolled-rnn": unrolled_rnn,
    "max-pool-reshape": max_pool_reshape,
    "gelu-mlp-float32": gelu_mlp_float32,
    "float32-embedding-nll": float32_embedding_nll,
}


def _train(case: Case, step: Callable[..., Any]) -> tuple[list[Array], Any]:
    params = tg.tree.map(lambda t: tg.tensor(t.data.copy()), case.params)
    state = case.opt.init(params)
    losses = []
    for x, y in case.batches:
        params, state, loss = step(params, state, tg.tensor(x), y if case.raw_labels else tg.tensor(y))
        losses.append(loss.data.copy())
    return losses, tg.tree.map(lambda t: t.data.copy(), params)


def _step_of(case: Case) -> Callable[..., Any]:
    def step(params: Any, state: Any, x: Tensor, y: Any) -> tuple[Any, Any, Tensor]:
        with tg.Tape() as tape:
            loss = case.loss(params, x, y)
        grads = tape.gradient(loss, params)
        params, state = case.opt.update(grads, state, params)
        return params, state, loss

    return step


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("donate", [False, True], ids=["kept", "donated"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_replay_trains_bit_for_bit_like_eager(name: str, donate: bool) -> None:
    case = CASES[name]()
    eager_losses, eager_params = _train(case, _step_of(case))
    replayed = tg.replay(_step_of(case), donate_argnums=(0, 1) if donate else ())
    losses, params = _train(case, replayed)
    assert len(losses) == STEPS
    for step, (got, want) in enumerate(zip(losses, eager_losses)):
        assert np.array_equal(got, want), f"{name}: loss of step {step} differs"
    for got, want in zip(tg.tree.leaves(params), tg.tree.leaves(eager_params)):
        assert np.array_equal(got, want), f"{name}: final parameters differ"
    # It really replayed: at most the first two calls traced per signature (parameters from
    # init, then from the optimizer), and nothing fell back to eager unless values steer shapes.
    counts = (replayed.traces, replayed.replays, replayed.eager_calls)
    assert sum(counts) == STEPS, counts
    if case.may_fall_back:  # the mask's size changes as the weights train: those calls run eagerly
        assert replayed.replays >= 5, counts
    else:
        assert replayed.replays >= STEPS - 4 and replayed.eager_calls == 0, counts


# ---- what indexing at traced positions needs from the trace ----------------------------------


def test_a_constant_table_indexed_at_traced_positions_is_never_a_reused_buffer() -> None:
    table = np.arange(12.0).reshape(4, 3)

    def f(idx: Tensor, w: Tensor) -> Tensor:
        rows = tg.tensor(table)[idx]  # the trace's snapshot of the table dies here...
        h = w * 2.0 + 1.0  # ...and a result of its shape and dtype comes next
        return (rows * h).sum()

    replayed = tg.replay(f)
    for k in range(4):
        idx, w = tg.tensor(np.array([k, 0, 3, k])), tg.tensor(np.full((4, 3), float(k)))
        assert np.array_equal(replayed(idx, w).data, f(idx, w).data)
    assert (replayed.traces, replayed.replays, replayed.eager_calls) == (1, 3, 0)


UNOWNED = (
    "replay: a traced array was converted to a NumPy array inside a replayed function "
    "(np.asarray(x), np.array(x), tensor.numpy()), or used to index or fill an array the trace "
    "does not own (table[idx] or buf[idx] = x, where table is a constant or buf was made by "
    "np.zeros(shape)): "
    "the value would be frozen into the replay. Convert it outside the replayed function "
    "(return the array and convert it there); index a tensor (tapegrad.tensor(table)[idx]) or "
    "pass the table as an argument; allocate buffers from a traced array (np.zeros_like(x)); "
    "or run this function without replay."
)


def _numpy_table_lookup(w: Tensor, y: Tensor) -> Tensor:
    return (w * tg.Tensor(np.eye(4)[y.data])).sum()  # NumPy indexes the constant itself


def _numpy_zeros_buffer(w: Tensor, y: Tensor) -> Tensor:
    target = np.zeros((8, 4))
    target[np.arange(8), y.data] = 1.0  # a buffer the trace does not own
    return (w * tg.Tensor(target)).sum()


def _tensor_numpy(w: Tensor, y: Tensor) -> Tensor:
    return (w * float(w.numpy().sum())).sum()


@pytest.mark.parametrize("fn", [_numpy_table_lookup, _numpy_zeros_buffer, _tensor_numpy],
                         ids=["table[idx]", "zeros-setitem", "tensor.numpy"])
def test_numpy_indexing_of_an_array_the_trace_does_not_own_says_what_to_do(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    w, y = tg.tensor(np.ones((8, 4))), tg.tensor(np.arange(8) % 4)
    fn(w, y)  # fine eagerly
    with pytest.raises(tg.ReplayError, match="^" + re.escape(UNOWNED) + "$"):
        tg.replay(fn)(w, y)
