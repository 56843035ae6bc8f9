"""The CuPy path: tensors on ``'cuda'``, ops that follow their inputs, gradients as on the CPU.

Every test here is marked `gpu`; conftest skips them only where
`tapegrad.cuda_available()` is False (no CuPy, or no CUDA device).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import Tape, Tensor
from tapegrad.testing import check_grads

pytestmark = pytest.mark.gpu

_rng = np.random.default_rng(3)
_X = _rng.standard_normal((8, 5))
_PARAMS = {"w": _rng.standard_normal((5, 3)), "b": _rng.standard_normal(3)}
_LABELS = np.array([0, 1, 2, 1, 0, 2, 2, 1])


def _loss(params: dict[str, Tensor], x: Tensor) -> Tensor:
    logits = tg.tanh(x @ params["w"] + params["b"])
    picked = tg.log_softmax(logits)[np.arange(8), _LABELS]
    return -picked.mean() + tg.maximum(logits, 0.0).max(axis=1).sum() * 0.1


def test_tensor_on_cuda() -> None:
    x = tg.tensor([1.0, 2.0], device="cuda")
    assert x.device == "cuda"
    assert x.dtype == np.float32
    assert repr(x) == "Tensor([1., 2.], dtype=float32, device=cuda)"
    assert type(x.numpy()) is np.ndarray


def test_to_moves_between_devices() -> None:
    x = tg.tensor(np.arange(3.0))
    on_gpu = x.to("cuda")
    assert on_gpu.device == "cuda" and on_gpu.dtype == np.float64
    back = on_gpu.to("cpu")
    assert back.device == "cpu"
    np.testing.assert_array_equal(back.numpy(), [0.0, 1.0, 2.0])


def test_ops_follow_their_inputs_device() -> None:
    x = tg.tensor(np.arange(6.0).reshape(2, 3), device="cuda")
    results = [
        x + 1.0,
        x * x,
        tg.exp(x),
        x @ x.T,
        x.sum(axis=0),
        x.max(),
        tg.softmax(x),
        x[np.array([1, 1])],
        x[x > 2.0],
        tg.where(x > 2.0, x, 0.0),
        tg.concatenate([x, x]),
        tg.stack([x, x]),
        x.clip(1.0, 4.0),
    ]
    assert [r.device for r in results] == ["cuda"] * len(results)
    np.testing.assert_array_equal((x * x).numpy(), np.arange(6.0).reshape(2, 3) ** 2)


def test_gradients_on_the_gpu_equal_those_on_the_cpu() -> None:
    cpu_params = {k: tg.tensor(v) for k, v in _PARAMS.items()}
    gpu_params = {k: tg.tensor(v, device="cuda") for k, v in _PARAMS.items()}
    with Tape() as cpu_tape:
        cpu_loss = _loss(cpu_params, tg.tensor(_X))
    with Tape() as gpu_tape:
        gpu_loss = _loss(gpu_params, tg.tensor(_X, device="cuda"))
    cpu_grads = cpu_tape.gradient(cpu_loss, cpu_params)
    gpu_grads = gpu_tape.gradient(gpu_loss, gpu_params)
    np.testing.assert_allclose(gpu_loss.item(), cpu_loss.item(), rtol=1e-10)
    for k in cpu_params:
        assert gpu_grads[k].device == "cuda"
        np.testing.assert_allclose(gpu_grads[k].numpy(), cpu_grads[k].numpy(), rtol=1e-9, atol=1e-12)


def test_second_order_checks_on_the_gpu() -> None:
    x = tg.tensor(_rng.standard_normal((3, 4)), device="cuda")
    check_grads(lambda t: tg.logsumexp(t * t, axis=1), [x], order=2)
    check_grads(lambda t: t[np.array([0, 0, 2])] ** 3, [x], order=2)


def test_the_default_device_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPEGRAD_DEVICE", "cuda")
    assert tg.tensor([1.0, 2.0]).device == "cuda"
    assert tg.tensor(np.ones(2)).device == "cuda"
    assert tg.tensor([1.0], device="cpu").device == "cpu"


def test_mixing_devices_raises() -> None:
    cpu = tg.tensor([1.0, 2.0])
    gpu = tg.tensor([1.0, 2.0], device="cuda")
    message = (
        "`add`: operands are on different devices (cpu and cuda); move one with "
        ".to('cuda') or .to('cpu') first"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        cpu + gpu
    with pytest.raises(ValueError, match=re.escape(message.replace("add", "mul"))):
        gpu * cpu
    with pytest.raises(ValueError, match=re.escape(message.replace("add", "matmul"))):
        cpu @ gpu
    with pytest.raises(ValueError, match=re.escape("`stack`: tensors are on different devices")):
        tg.stack([cpu, gpu])
