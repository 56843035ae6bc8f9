"""tapegrad: a small, typed, functional reverse-mode autodiff engine.

Tensors are immutable values; a `Tape` records the ops run on them and
computes gradients for any pytree of sources.

>>> import tapegrad as tg
>>> params = {"w": tg.tensor([[1.0, -1.0]]), "b": tg.tensor([0.5])}
>>> x = tg.tensor([[2.0], [3.0]])
>>> with tg.Tape() as tape:
...     loss = ((x @ params["w"] + params["b"]) ** 2).mean()
>>> grads = tape.gradient(loss, params)
>>> grads["b"]
Tensor([1.], dtype=float32, device=cpu)
"""

# _tensor first: it pulls in the op modules, which need `Tensor` defined.
from ._tensor import Tensor as Tensor  # noqa: I001
from ._anomaly import debug_nans as debug_nans
from ._backend import cuda_available as cuda_available
from ._custom_vjp import custom_vjp as custom_vjp
from ._linalg import affine as affine
from ._linalg import matmul as matmul
from ._memory import retain_freed_memory as retain_freed_memory
from ._math import abs as abs  # noqa: A004
from ._math import add as add
from ._math import cast as cast
from ._math import clip as clip
from ._math import copy as copy
from ._math import cos as cos
from ._math import div as div
from ._math import equal as equal
from ._math import exp as exp
from ._math import greater as greater
from ._math import greater_equal as greater_equal
from ._math import isfinite as isfinite
from ._math import isnan as isnan
from ._math import less as less
from ._math import less_equal as less_equal
from ._math import log as log
from ._math import logical_and as logical_and
from ._math import logical_not as logical_not
from ._math import logical_or as logical_or
from ._math import maximum as maximum
from ._math import minimum as minimum
from ._math import mul as mul
from ._math import neg as neg
from ._math import not_equal as not_equal
from ._math import pow as pow  # noqa: A004
from ._math import sigmoid as sigmoid
from ._math import sign as sign
from ._math import sin as sin
from ._math import sqrt as sqrt
from ._math import sub as sub
from ._math import tanh as tanh
from ._math import where as where
from ._primitive import PRIMITIVES as PRIMITIVES
from ._primitive import Primitive as Primitive
from ._reduce import argmax as argmax
from ._reduce import argmin as argmin
from ._reduce import log_softmax as log_softmax
from ._reduce import logsumexp as logsumexp
from ._reduce import max as max  # noqa: A004
from ._reduce import mean as mean
from ._reduce import min as min  # noqa: A004
from ._reduce import softmax as softmax
from ._reduce import sum as sum  # noqa: A004
from ._shape import broadcast_to as broadcast_to
from ._shape import concatenate as concatenate
from ._shape import expand_dims as expand_dims
from ._shape import getitem as getitem
from ._shape import permute as permute
from ._shape import reshape as reshape
from ._shape import squeeze as squeeze
from ._shape import stack as stack
from ._shape import swapaxes as swapaxes
from ._shape import transpose as transpose
from ._replay import Replayed as Replayed
from ._replay import ReplayRetraceWarning as ReplayRetraceWarning
from ._replay import replay as replay
from ._tape import Tape as Tape
from ._tape import is_recording as is_recording
from ._tape import stop_gradient as stop_gradient
from ._tensor import TensorLike as TensorLike
from ._tensor import tensor as tensor
from ._traced import ReplayConstantWarning as ReplayConstantWarning
from ._traced import ReplayError as ReplayError


# The layers above the core; the core itself never imports them.
from . import debug as debug  # noqa: E402
from . import nn as nn  # noqa: E402
from . import optim as optim  # noqa: E402
from . import random as random  # noqa: E402
from . import testing as testing  # noqa: E402
from . import tree as tree  # noqa: E402
