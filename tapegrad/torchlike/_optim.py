"""``Adam`` and ``SGD`` with ``step()``, running the functional optimizers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import optim
from .._tensor import Tensor as CoreTensor
from ._tensor import Tensor


class Optimizer:
    """Holds the parameters and the functional state; ``step()`` rebinds ``.data``."""

    def __init__(self, params: Iterable[Tensor], opt: optim.Optimizer) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for p in self.params:
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"{type(self).__name__}: parameters must be torchlike Tensors, got "
                    f"{type(p).__name__}"
                )
        self._opt = opt
        self.state: Any = opt.init([p.value for p in self.params])

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (and any unused recorded graph)."""
        from . import _autograd

        _autograd.release()
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """One functional update of every parameter that has a gradient."""
        params = [p.value for p in self.params]
        grads = [
            p.grad.value if p.grad is not None else CoreTensor(p.data * 0) for p in self.params
        ]
        new_params, self.state = self._opt.update(grads, self.state, params)
        for p, new in zip(self.params, new_params):
            if p.grad is not None:  # as PyTorch: a parameter without a gradient stays put
                p.value = new


class Adam(Optimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)``, as ``torch.optim.Adam``."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, optim.adam(lr, betas[0], betas[1], eps))


class SGD(Optimizer):
    """``SGD(params, lr, momentum=0)``, as ``torch.optim.SGD``."""

    def __init__(
        self, params: Iterable[Tensor], lr: float, momentum: float = 0.0, nesterov: bool = False
    ) -> None:
        super().__init__(params, optim.sgd(lr, momentum, nesterov))
