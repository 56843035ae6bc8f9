"""``Adam`` and ``SGD`` with ``step()``, running the functional optimizers.

As in PyTorch, the hyperparameters live in ``optimizer.param_groups[0]`` (one
group), so ``for g in opt.param_groups: g["lr"] = 0.01`` changes the learning
rate: the next ``step()`` rebuilds the functional optimizer from the group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .. import _tree, optim
from .._core._tensor import Tensor as CoreTensor
from ._tensor import Tensor


class Optimizer:
    """Holds the parameters, ``param_groups`` and the functional state; ``step()`` rebinds ``.data``.

    ``make`` builds the functional optimizer from a group's hyperparameters
    (every entry but ``"params"``).
    """

    #: What `torchlike.replay` need not guard: the state is data, the rest follows param_groups.
    _unguarded: frozenset[str] = frozenset({"state", "defaults", "_make", "_built_from", "_opt"})

    def __init__(
        self,
        params: Iterable[Tensor],
        defaults: dict[str, Any],
        make: Callable[..., optim.Optimizer],
    ) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for p in self.params:
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"{type(self).__name__}: parameters must be torchlike Tensors, got "
                    f"{type(p).__name__}"
                )
        self.defaults = dict(defaults)
        #: As PyTorch's: one group, holding the parameters and the hyperparameters.
        self.param_groups: list[dict[str, Any]] = [{"params": self.params, **defaults}]
        self._make = make
        self._built_from = dict(defaults)
        self._opt = make(**defaults)
        self.state: Any = self._opt.init([p.value for p in self.params])

    def _current(self) -> optim.Optimizer:
        """The functional optimizer for the group's hyperparameters now (rebuilt if they changed)."""
        if len(self.param_groups) != 1:
            raise ValueError(
                f"{type(self).__name__}.step(): param_groups has {len(self.param_groups)} groups; "
                "this wrapper supports one. Use one optimizer per group of parameters."
            )
        hyper = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        if hyper != self._built_from:
            opt = self._make(**hyper)
            fresh = opt.init([p.value for p in self.params])
            if _tree.structure(fresh) != _tree.structure(self.state):
                changed = sorted(k for k in hyper if hyper[k] != self._built_from.get(k))
                raise ValueError(
                    f"{type(self).__name__}.step(): changing {', '.join(changed)} in param_groups "
                    "changes the optimizer's state (e.g. momentum from zero); set it when "
                    "constructing the optimizer"
                )
            self._opt, self._built_from = opt, hyper
        return self._opt

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (and any recorded graph no live tensor reaches)."""
        from . import _autograd

        _autograd.release_unused()
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """One functional update of every parameter that has a gradient."""
        params = [p.value for p in self.params]
        grads = [
            p.grad.value if p.grad is not None else CoreTensor(p.data * 0) for p in self.params
        ]
        new_params, new_state = self._current().update(grads, self.state, params)
        skipped = [i for i, p in enumerate(self.params) if p.grad is None]
        self.state = _keep_state_of(skipped, self.state, new_state) if skipped else new_state
        for p, new in zip(self.params, new_params):
            if p.grad is not None:  # as PyTorch: a parameter without a gradient stays put
                p.value = new


def _keep_state_of(skipped: list[int], old: Any, new: Any) -> Any:
    """``new``, except that the per-parameter entries of the ``skipped`` parameters stay ``old``.

    As the seed's Adam (``if p.grad is None: continue``) and PyTorch: a parameter
    without a gradient keeps its moments (the step count stays global, as the
    seed's). The state was made by ``init`` for the parameter list, so the
    entries of parameter ``i`` are the tensor leaves whose key path ends in ``[i]``.
    The step counts are tensor leaves too (0-d arrays), but their paths end in
    ``.step`` or ``.count``, so they always take the new value.
    """
    paths, old_leaves, treedef = _tree.flatten_with_paths(old)
    new_leaves = _tree.leaves(new)
    ends = tuple(f"[{i}]" for i in skipped)
    kept = [
        o if isinstance(o, CoreTensor) and path.endswith(ends) else n
        for path, o, n in zip(paths, old_leaves, new_leaves)
    ]
    return treedef.unflatten(kept)


class Adam(Optimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)``, as ``torch.optim.Adam``."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps}, _adam)


class SGD(Optimizer):
    """``SGD(params, lr, momentum=0)``, as ``torch.optim.SGD``."""

    def __init__(
        self, params: Iterable[Tensor], lr: float, momentum: float = 0.0, nesterov: bool = False
    ) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov}, optim.sgd)


def _adam(lr: float, betas: tuple[float, float], eps: float) -> optim.Optimizer:
    return optim.adam(lr, betas[0], betas[1], eps)
