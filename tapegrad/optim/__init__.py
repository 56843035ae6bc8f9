"""Pure optimizers: ``state = opt.init(params)``; ``params, state = opt.update(grads, state, params)``."""

from ._adam import AdamState as AdamState
from ._adam import ScaleState as ScaleState
from ._adam import TraceState as TraceState
from ._adam import scale_by_adam as scale_by_adam
from ._adam import scale_by_learning_rate as scale_by_learning_rate
from ._adam import trace as trace
from ._optimizer import Optimizer as Optimizer
from ._optimizer import adam as adam
from ._optimizer import sgd as sgd
from ._schedule import constant_schedule as constant_schedule
from ._schedule import cosine_decay_schedule as cosine_decay_schedule
from ._schedule import warmup_cosine_decay_schedule as warmup_cosine_decay_schedule
from ._transform import Transform as Transform
from ._transform import apply_updates as apply_updates
from ._transform import chain as chain
