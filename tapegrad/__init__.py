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
from ._core._tensor import Tensor as Tensor  # noqa: I001
from ._core._anomaly import debug_nans as debug_nans
from ._arrays._backend import cuda_available as cuda_available
from ._core._custom_vjp import custom_vjp as custom_vjp
from ._core._linalg import affine as affine
from ._core._linalg import matmul as matmul
from ._arrays._memory import retain_freed_memory as retain_freed_memory
from ._core._math import abs as abs  # noqa: A004
from ._core._math import add as add
from ._core._math import cast as cast
from ._core._math import clip as clip
from ._core._math import copy as copy
from ._core._math import cos as cos
from ._core._math import div as div
from ._core._math import equal as equal
from ._core._math import exp as exp
from ._core._math import greater as greater
from ._core._math import greater_equal as greater_equal
from ._core._math import isfinite as isfinite
from ._core._math import isnan as isnan
from ._core._math import less as less
from ._core._math import less_equal as less_equal
from ._core._math import log as log
from ._core._math import logical_and as logical_and
from ._core._math import logical_not as logical_not
from ._core._math import logical_or as logical_or
from ._core._math import maximum as maximum
from ._core._math import minimum as minimum
from ._core._math import mul as mul
from ._core._math import neg as neg
from ._core._math import not_equal as not_equal
from ._core._math import pow as pow  # noqa: A004
from ._core._math import sigmoid as sigmoid
from ._core._math import sign as sign
from ._core._math import sin as sin
from ._core._math import sqrt as sqrt
from ._core._math import sub as sub
from ._core._math import tanh as tanh
from ._core._math import where as where
from ._core._primitive import PRIMITIVES as PRIMITIVES
from ._core._primitive import Primitive as Primitive
from ._core._reduce import argmax as argmax
from ._core._reduce import argmin as argmin
from ._core._reduce import log_softmax as log_softmax
from ._core._reduce import logsumexp as logsumexp
from ._core._reduce import max as max  # noqa: A004
from ._core._reduce import mean as mean
from ._core._reduce import min as min  # noqa: A004
from ._core._reduce import softmax as softmax
from ._core._reduce import sum as sum  # noqa: A004
from ._core._shape import broadcast_to as broadcast_to
from ._core._shape import concatenate as concatenate
from ._core._shape import expand_dims as expand_dims
from ._core._shape import getitem as getitem
from ._core._shape import permute as permute
from ._core._shape import reshape as reshape
from ._core._shape import squeeze as squeeze
from ._core._shape import stack as stack
from ._core._shape import swapaxes as swapaxes
from ._core._shape import transpose as transpose
from ._replay._replayed import Replayed as Replayed
from ._replay._replayed import ReplayRetraceWarning as ReplayRetraceWarning
from ._replay._replayed import replay as replay
from ._core._tape import Tape as Tape
from ._core._record import is_recording as is_recording
from ._core._record import stop_gradient as stop_gradient
from ._core._tensor import TensorLike as TensorLike
from ._core._tensor import tensor as tensor
from ._arrays._traced import ReplayConstantWarning as ReplayConstantWarning
from ._arrays._traced import ReplayError as ReplayError


# The layers above the core; the core itself never imports them.
from . import debug as debug  # noqa: E402
from . import nn as nn  # noqa: E402
from . import optim as optim  # noqa: E402
from . import random as random  # noqa: E402
from . import testing as testing  # noqa: E402
from . import tree as tree  # noqa: E402
