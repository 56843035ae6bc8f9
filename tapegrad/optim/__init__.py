"""Pure optimizers: ``state = opt.init(params)``; ``params, state = opt.update(grads, state, params)``.

Laid out as optax is: ``_base.py`` (`Transform`, `chain`, `apply_updates`),
``_transforms.py`` (``scale_by_*``, `trace` and their states), ``_alias.py``
(`adam`, `sgd`, `Optimizer`), ``_schedule.py`` (learning-rate schedules) and
``_packing.py`` (an update run once on one flat buffer: how a transform opts
in, and what `tapegrad.replay` then recognises).
"""

from ._alias import Optimizer as Optimizer
from ._alias import adam as adam
from ._alias import sgd as sgd
from ._base import Transform as Transform
from ._base import apply_updates as apply_updates
from ._base import chain as chain
from ._schedule import constant_schedule as constant_schedule
from ._schedule import cosine_decay_schedule as cosine_decay_schedule
from ._schedule import warmup_cosine_decay_schedule as warmup_cosine_decay_schedule
from ._transforms import AdamState as AdamState
from ._transforms import ScaleState as ScaleState
from ._transforms import TraceState as TraceState
from ._transforms import scale_by_adam as scale_by_adam
from ._transforms import scale_by_learning_rate as scale_by_learning_rate
from ._transforms import trace as trace
