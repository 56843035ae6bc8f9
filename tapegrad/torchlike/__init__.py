"""A thin PyTorch-style layer over the functional core.

The classic loop runs unchanged: ``optimizer.zero_grad()``, ``loss =
criterion(model(x), y)``, ``loss.backward()``, ``optimizer.step()``. Under it,
the same `Tape` computes the gradients and `tapegrad.optim.adam` updates.
"""

from ..backend import BACKEND_NAME as BACKEND_NAME
from ..backend import xp as xp
from ._autograd import no_grad as no_grad
from ._module import GELU as GELU
from ._module import CrossEntropyLoss as CrossEntropyLoss
from ._module import Linear as Linear
from ._module import Module as Module
from ._module import MSELoss as MSELoss
from ._module import ReLU as ReLU
from ._module import Sequential as Sequential
from ._optim import SGD as SGD
from ._replay import replay as replay
from ._optim import Adam as Adam
from ._optim import Optimizer as Optimizer
from ._tensor import Tensor as Tensor
from ._tensor import where as where
