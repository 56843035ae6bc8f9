"""Pure layers and losses: frozen descriptions and plain parameter pytrees.

>>> import tapegrad as tg
>>> model = tg.nn.MLP((4, 8, 3))
>>> params = model.init(tg.random.key(0))
>>> x, y = tg.tensor([[0.1, 0.2, 0.3, 0.4]]), tg.tensor([2])
>>> with tg.Tape() as tape:
...     loss = tg.nn.cross_entropy(model.apply(params, x), y)
>>> grads = tape.gradient(loss, params)
>>> grads[0].weight.shape
(4, 8)
"""

from ._activations import gelu as gelu
from ._activations import relu as relu
from ._layers import GELU as GELU
from ._layers import MLP as MLP
from ._layers import Activation as Activation
from ._layers import Layer as Layer
from ._layers import Linear as Linear
from ._layers import LinearParams as LinearParams
from ._layers import ReLU as ReLU
from ._layers import Sequential as Sequential
from ._layers import serial as serial
from ._losses import Reduction as Reduction
from ._losses import cross_entropy as cross_entropy
from ._losses import mse as mse
