"""Layers and losses of `tapegrad.nn`: gradient checks, PyTorch parity, pinned values and errors.

Every layer and loss gets a second-order `check_grads` in float64. The fused
rules (cross-entropy, GELU) are compared with their unfused definitions and
with PyTorch, and cross-entropy's stability and error messages are pinned.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tapegrad as tg
from tapegrad import Tensor, nn
from tapegrad.nn import LinearParams
from tapegrad.testing import check_grads

from _support import log_loss

Array = np.ndarray[Any, np.dtype[np.float64]]


def randn(seed: int, *shape: int) -> Array:
    """Standard normal float64 values from a fixed seed."""
    return np.random.default_rng(seed).standard_normal(shape)


def away_from_zero(seed: int, *shape: int) -> Array:
    """Values with 0.2 <= |x| <= 2, so ReLU's kink is never within a finite-difference step."""
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 2.0, shape)


def t64(a: Any) -> Tensor:
    """A float64 tensor."""
    return tg.tensor(np.asarray(a, dtype=np.float64))


def torch64(a: Array, requires_grad: bool = False) -> torch.Tensor:
    """A float64 torch tensor with the same values."""
    return torch.tensor(a, dtype=torch.float64, requires_grad=requires_grad)


# ---- gradient checks: every layer and loss, order 2, float64 ---------------------------


def test_check_grads_linear_with_bias() -> None:
    layer = nn.Linear(4, 3, dtype="float64")

    def f(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        return layer.apply(LinearParams(w, b), x)

    check_grads(f, [t64(randn(0, 5, 4)), t64(randn(1, 4, 3)), t64(randn(2, 3))], order=2)


def test_check_grads_linear_without_bias() -> None:
    layer = nn.Linear(4, 3, bias=False, dtype="float64")

    def f(x: Tensor, w: Tensor) -> Tensor:
        return layer.apply(LinearParams(w, None), x)

    check_grads(f, [t64(randn(3, 5, 4)), t64(randn(4, 4, 3))], order=2)


@pytest.mark.parametrize("activation", [nn.GELU, nn.ReLU], ids=["gelu", "relu"])
def test_check_grads_mlp(activation: Any) -> None:
    model = nn.MLP((4, 6, 5, 3), activation=activation, dtype="float64")
    params = model.init(tg.random.key(7))
    (l1, _, l2, _, l3) = params
    x = t64(away_from_zero(5, 8, 4))

    def f(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, w3: Tensor, b3: Tensor) -> Tensor:
        p = (LinearParams(w1, b1), None, LinearParams(w2, b2), None, LinearParams(w3, b3))
        return model.apply(p, x)

    # Biases away from zero too, so no pre-activation sits near ReLU's kink.
    biases = [t64(away_from_zero(s, n)) for s, n in ((10, 6), (11, 5), (12, 3))]
    args = [x, l1.weight, biases[0], l2.weight, biases[1], l3.weight, biases[2]]
    check_grads(f, args, order=2)


def test_check_grads_sequential_relu_layer_by_layer() -> None:
    model = nn.Sequential(nn.Linear(3, 4, dtype="float64"), nn.ReLU(), nn.Linear(4, 2, dtype="float64"))
    first, relu_params, second = model.init(tg.random.key(1))
    assert relu_params is None

    def f(x: Tensor, w1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
        return model.apply((LinearParams(w1, t64([0.3, -0.4, 0.5, -0.6])), None, LinearParams(w2, b2)), x)

    check_grads(f, [t64(away_from_zero(2, 6, 3)), first.weight, second.weight, t64(randn(3, 2))], order=2)


def test_check_grads_gelu() -> None:
    check_grads(nn.gelu, [t64(randn(4, 3, 5) * 2)], order=2)


def test_check_grads_relu_away_from_zero() -> None:
    check_grads(nn.relu, [t64(away_from_zero(6, 3, 5))], order=2)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_check_grads_cross_entropy(reduction: nn.Reduction) -> None:
    labels = tg.tensor([0, 3, 1, 3, 2])

    def f(logits: Tensor) -> Tensor:
        return nn.cross_entropy(logits, labels, reduction=reduction)

    check_grads(f, [t64(randn(7, 5, 4) * 3)], order=2)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_check_grads_mse(reduction: nn.Reduction) -> None:
    def f(p: Tensor, t: Tensor) -> Tensor:
        return nn.mse(p, t, reduction=reduction)

    check_grads(f, [t64(randn(8, 4, 3)), t64(randn(9, 4, 3))], order=2)


def test_check_grads_log_loss() -> None:
    labels = tg.tensor([2, 0, 1])
    check_grads(lambda z: log_loss(z, labels), [t64(randn(10, 3, 3))], order=2)


# ---- cross-entropy: references, stability, the gradient's closed form ------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch_values_and_gradients(reduction: nn.Reduction) -> None:
    logits = randn(11, 6, 5) * 4
    labels = np.array([4, 0, 2, 2, 1, 3])
    cotangent = randn(12, 6) if reduction == "none" else np.array(0.7)
    x = t64(logits)
    with tg.Tape() as tape:
        ours = nn.cross_entropy(x, tg.tensor(labels), reduction=reduction)
    grad = tape.gradient(ours, x, output_gradients=t64(cotangent))

    xt = torch64(logits, requires_grad=True)
    theirs = F.cross_entropy(xt, torch.tensor(labels), reduction=reduction)
    torch.autograd.backward(theirs, torch64(cotangent))
    assert xt.grad is not None
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(grad.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_cross_entropy_equals_unfused_log_loss() -> None:
    logits = t64(randn(13, 7, 4) * 2)
    labels = tg.tensor([0, 1, 2, 3, 3, 2, 1])
    with tg.Tape(persistent=True) as tape:
        fused = nn.cross_entropy(logits, labels)
        unfused = log_loss(logits, labels)
    np.testing.assert_allclose(fused.item(), unfused.item(), rtol=1e-14)
    np.testing.assert_allclose(
        tape.gradient(fused, logits).numpy(), tape.gradient(unfused, logits).numpy(), rtol=1e-12, atol=1e-16
    )


def test_cross_entropy_gradient_is_softmax_minus_one_hot_over_batch() -> None:
    # Two rows, three classes; rows are ln-spaced so the softmax is exact fractions.
    logits = t64([[0.0, math.log(3.0), 0.0], [math.log(2.0), 0.0, math.log(2.0)]])
    labels = tg.tensor([1, 2])
    with tg.Tape() as tape:
        loss = nn.cross_entropy(logits, labels)
    grad = tape.gradient(loss, logits)
    # softmax rows: [1/5, 3/5, 1/5] and [2/5, 1/5, 2/5]; one-hot: class 1, class 2; batch 2.
    expected = np.array([[0.2, 0.6 - 1.0, 0.2], [0.4, 0.2, 0.4 - 1.0]]) / 2
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-14, atol=1e-16)
    assert loss.item() == pytest.approx((math.log(5 / 3) + math.log(5 / 2)) / 2, rel=1e-14)


def test_cross_entropy_with_logits_of_1000_stays_finite_and_exact() -> None:
    logits = t64([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]])
    labels = tg.tensor([0, 2])
    per_example = nn.cross_entropy(logits, labels, reduction="none")
    # Row 0 is certain and right: loss 0. Row 1 is log(1 + e) off (999 vs 1000).
    np.testing.assert_allclose(per_example.numpy(), [0.0, math.log1p(math.e)], rtol=1e-15, atol=0)
    assert nn.cross_entropy(logits, labels, reduction="sum").item() == pytest.approx(1.3132616875182228, rel=1e-15)
    with tg.Tape() as tape:
        loss = nn.cross_entropy(logits, labels)
    assert loss.item() == pytest.approx(0.6566308437591114, rel=1e-15)
    grad = tape.gradient(loss, logits).numpy()
    assert np.isfinite(grad).all()
    p = math.e / (1 + math.e)
    np.testing.assert_allclose(grad, [[0.0, 0.0, 0.0], [0.0, p / 2, -p / 2]], rtol=1e-14, atol=1e-300)


def test_cross_entropy_float32_stays_float32() -> None:
    logits = tg.tensor([[1.0, 2.0], [0.5, -0.5]])
    with tg.Tape() as tape:
        loss = nn.cross_entropy(logits, tg.tensor([1, 0]))
    assert loss.dtype == np.float32
    assert tape.gradient(loss, logits).dtype == np.float32


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        (
            tg.tensor([0, 3]),
            ValueError,
            "`cross_entropy`: label 3 is outside [0, 3) for logits with 3 classes",
        ),
        (
            tg.tensor([-1, 0]),
            ValueError,
            "`cross_entropy`: label -1 is outside [0, 3) for logits with 3 classes",
        ),
        (
            tg.tensor([[0, 1]]),
            ValueError,
            "`cross_entropy`: labels have shape (1, 2) but logits have shape (2, 3); "
            "expected labels of shape (2,), one class per row",
        ),
        (
            tg.tensor([0]),
            ValueError,
            "`cross_entropy`: labels have shape (1,) but logits have shape (2, 3); "
            "expected labels of shape (2,), one class per row",
        ),
        (
            tg.tensor([0.0, 1.0]),
            TypeError,
            "`cross_entropy`: labels must be integer class indices, got dtype float32; "
            "convert them with labels.astype('int64')",
        ),
        (
            [0, 1],
            TypeError,
            "`cross_entropy`: labels must be an integer Tensor, got list; wrap them with tapegrad.tensor(...)",
        ),
    ],
    ids=["too-big", "negative", "2d", "short", "float", "list"],
)
def test_cross_entropy_bad_labels(labels: Any, error: type[Exception], message: str) -> None:
    logits = tg.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    with pytest.raises(error) as info:
        nn.cross_entropy(logits, labels)
    assert str(info.value) == message


def test_cross_entropy_bad_labels_also_raise_under_a_tape() -> None:
    logits = tg.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    with tg.Tape(), pytest.raises(ValueError) as info:
        nn.cross_entropy(logits, tg.tensor([0, 9]))
    assert str(info.value) == "`cross_entropy`: label 9 is outside [0, 3) for logits with 3 classes"


def test_cross_entropy_bad_reduction() -> None:
    with pytest.raises(ValueError) as info:
        nn.cross_entropy(tg.tensor([[1.0, 2.0]]), tg.tensor([0]), reduction="avg")  # type: ignore[arg-type]
    assert str(info.value) == "`cross_entropy`: reduction must be 'mean', 'sum' or 'none', got 'avg'"


def test_cross_entropy_bad_logits_shape() -> None:
    with pytest.raises(ValueError) as info:
        nn.cross_entropy(tg.tensor([1.0, 2.0]), tg.tensor([0]))
    assert str(info.value) == (
        "`cross_entropy`: logits must be a floating (batch, classes) tensor, got shape (2,) and dtype float32"
    )


# ---- mse ---------------------------------------------------------------------------------


def test_mse_values() -> None:
    p, t = tg.tensor([[1.0, 2.0], [3.0, 4.0]]), tg.tensor([[0.0, 0.0], [3.0, 2.0]])
    assert nn.mse(p, t).item() == 2.25
    assert nn.mse(p, t, reduction="sum").item() == 9.0
    assert nn.mse(p, t, reduction="none").numpy().tolist() == [[1.0, 4.0], [0.0, 4.0]]


def test_mse_matches_torch_gradient() -> None:
    p, t = randn(14, 5, 3), randn(15, 5, 3)
    x = t64(p)
    with tg.Tape() as tape:
        loss = nn.mse(x, t64(t))
    ours = tape.gradient(loss, x)
    pt = torch64(p, requires_grad=True)
    torch.autograd.backward(F.mse_loss(pt, torch64(t)))
    assert pt.grad is not None
    np.testing.assert_allclose(ours.numpy(), pt.grad.numpy(), rtol=1e-13)


def test_mse_refuses_to_broadcast() -> None:
    with pytest.raises(ValueError) as info:
        nn.mse(tg.tensor([[1.0, 2.0]]), tg.tensor([1.0, 2.0]))
    assert str(info.value) == (
        "`mse`: prediction has shape (1, 2) but target has shape (2,); "
        "reshape one so they match (mse never broadcasts)"
    )


# ---- GELU against PyTorch's tanh approximation ---------------------------------------------


def test_gelu_matches_torch_tanh_approximation() -> None:
    x = np.concatenate([randn(16, 50) * 3, [-10.0, -3.0, 0.0, 1e-8, 3.0, 10.0]])
    cot = randn(17, x.size)
    xt = t64(x)
    with tg.Tape() as tape:
        y = nn.gelu(xt)
    grad = tape.gradient(y, xt, output_gradients=t64(cot))
    xtt = torch64(x, requires_grad=True)
    yt = F.gelu(xtt, approximate="tanh")
    torch.autograd.backward(yt, torch64(cot))
    assert xtt.grad is not None
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(grad.numpy(), xtt.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_gelu_literal_values() -> None:
    y = nn.gelu(t64([-1.0, 0.0, 1.0, 2.0])).numpy()
    np.testing.assert_allclose(y, [-0.15880800939172324, 0.0, 0.8411919906082768, 1.954597694087775], rtol=1e-14)


def test_relu_values_and_gradient() -> None:
    x = t64([-2.0, -0.5, 0.5, 3.0])
    with tg.Tape() as tape:
        y = nn.relu(x)
        total = y.sum()
    assert y.numpy().tolist() == [0.0, 0.0, 0.5, 3.0]
    assert tape.gradient(total, x).numpy().tolist() == [0.0, 0.0, 1.0, 1.0]


def test_relu_keeps_nan_as_torch_does_and_passes_no_gradient_there() -> None:
    values = [np.nan, -np.inf, np.inf, -1.0, 0.0, 2.0]
    x = t64(values)
    with tg.Tape() as tape:
        y = nn.relu(x)
        total = (y * t64([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])).sum()
    np.testing.assert_array_equal(y.numpy(), torch.relu(torch.tensor(values)).numpy())
    # As JAX: the gradient is 0 at NaN (PyTorch passes it through) and at 0 (as both).
    assert tape.gradient(total, x).numpy().tolist() == [0.0, 0.0, 3.0, 0.0, 0.0, 6.0]


def test_activation_layers_have_no_params() -> None:
    assert nn.Sequential(nn.ReLU(), nn.GELU()).init(tg.random.key(0)) == (None, None)
    assert nn.ReLU().apply(None, tg.tensor([-1.0, 2.0])).numpy().tolist() == [0.0, 2.0]


# ---- Linear's initialisation -------------------------------------------------------------


def test_linear_init_is_kaiming_normal_with_zero_bias() -> None:
    params = nn.Linear(1000, 800).init(tg.random.key(3))
    w = params.weight.numpy().astype(np.float64)
    assert params.bias is not None
    assert params.weight.shape == (1000, 800)
    # 800,000 draws: the sample std is within 0.2% of sqrt(2/1000) with overwhelming probability.
    assert w.std() == pytest.approx(math.sqrt(2 / 1000), rel=5e-3)
    assert abs(w.mean()) < 5 * math.sqrt(2 / 1000) / math.sqrt(w.size)
    assert params.bias.numpy().tolist() == [0.0] * 800


def test_linear_init_dtype() -> None:
    p32 = nn.Linear(3, 2).init(tg.random.key(0))
    p64 = nn.Linear(3, 2, dtype="float64").init(tg.random.key(0))
    assert p32.bias is not None and p64.bias is not None
    assert (p32.weight.dtype, p32.bias.dtype) == (np.dtype(np.float32), np.dtype(np.float32))
    assert (p64.weight.dtype, p64.bias.dtype) == (np.dtype(np.float64), np.dtype(np.float64))
    np.testing.assert_array_equal(p32.weight.numpy(), p64.weight.numpy().astype(np.float32))


def test_linear_without_bias_has_none() -> None:
    params = nn.Linear(3, 2, bias=False).init(tg.random.key(0))
    assert params.bias is None
    assert nn.Linear(3, 2, bias=False).apply(params, tg.tensor([[1.0, 0.0, 0.0]])).numpy().tolist() == [
        params.weight.numpy()[0].tolist()
    ]


def test_linear_rejects_integer_dtype() -> None:
    with pytest.raises(ValueError) as info:
        nn.Linear(3, 2, dtype="int32")
    assert str(info.value) == "layer dtype must be floating, got int32"


def test_linear_init_same_key_is_bitwise_reproducible_and_keys_differ() -> None:
    model = nn.MLP()
    a = model.init(tg.random.key(42))
    b = model.init(tg.random.key(42))
    c = model.init(tg.random.key(43))
    leaves_a, leaves_b, leaves_c = (tg.tree.leaves(p) for p in (a, b, c))
    assert len(leaves_a) == 6
    for x, y, z in zip(leaves_a, leaves_b, leaves_c):
        assert x.numpy().tobytes() == y.numpy().tobytes()
    for x, z in zip(leaves_a[0::2], leaves_c[0::2]):  # the weights (biases are zeros in both)
        assert not np.array_equal(x.numpy(), z.numpy())
    # Each layer of one model gets its own key: no two layers share weights.
    assert not np.array_equal(a[0].weight.numpy()[:64, :64], a[2].weight.numpy()[:64, :64])


def test_linear_rejects_wrong_input_width() -> None:
    layer = nn.Linear(3, 2)
    with pytest.raises(ValueError) as info:
        layer.apply(layer.init(tg.random.key(0)), tg.tensor([[1.0, 2.0]]))
    assert str(info.value) == (
        "Linear(3, 2): input has shape (1, 2), but its last axis must have 3 features"
    )


def test_sequential_rejects_params_of_the_wrong_length() -> None:
    model = nn.MLP((3, 4, 2))
    params = model.init(tg.random.key(0))
    with pytest.raises(ValueError) as info:
        model.apply(params[:2], tg.tensor([[1.0, 2.0, 3.0]]))
    assert str(info.value) == "Sequential.apply: expected a tuple of 3 layer params, got tuple of 2"


def test_mlp_structure() -> None:
    model = nn.MLP()
    assert [type(layer).__name__ for layer in model.layers] == [
        "Linear", "Activation", "Linear", "Activation", "Linear",
    ]
    params = model.init(tg.random.key(0))
    shapes = [(p.weight.shape, p.bias.shape) for p in params if p is not None]
    assert shapes == [((784, 128), (128,)), ((128, 64), (64,)), ((64, 10), (10,))]


# ---- gradients come back in the parameters' own structure --------------------------------


def test_gradient_of_linear_params_is_linear_params() -> None:
    layer = nn.Linear(3, 2)
    params = layer.init(tg.random.key(0))
    with tg.Tape() as tape:
        loss = layer.apply(params, tg.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])).sum()
    grads = tape.gradient(loss, params)
    assert type(grads) is LinearParams
    assert grads.bias is not None
    assert grads.weight.numpy().tolist() == [[1.0, 1.0], [3.0, 3.0], [3.0, 3.0]]
    assert grads.bias.numpy().tolist() == [2.0, 2.0]


def test_gradient_of_sequential_params_is_a_tuple_of_the_same_structure() -> None:
    model = nn.MLP((3, 4, 2), activation=nn.GELU)
    params = model.init(tg.random.key(0))
    with tg.Tape() as tape:
        loss = nn.cross_entropy(model.apply(params, tg.tensor([[1.0, 2.0, 3.0]])), tg.tensor([1]))
    grads = tape.gradient(loss, params)
    assert type(grads) is tuple and len(grads) == 3
    assert type(grads[0]) is LinearParams and grads[1] is None and type(grads[2]) is LinearParams
    assert tg.tree.structure(grads) == tg.tree.structure(params)
    for g, p in zip(tg.tree.leaves(grads), tg.tree.leaves(params)):
        assert (g.shape, g.dtype) == (p.shape, p.dtype)


def test_gradient_of_bias_free_linear_keeps_none() -> None:
    layer = nn.Linear(2, 2, bias=False)
    params = layer.init(tg.random.key(0))
    with tg.Tape() as tape:
        loss = layer.apply(params, tg.tensor([[1.0, -1.0]])).sum()
    grads = tape.gradient(loss, params)
    assert type(grads) is LinearParams and grads.bias is None
    assert grads.weight.numpy().tolist() == [[1.0, 1.0], [-1.0, -1.0]]
