"""Save and load training state (parameters, optimizer state, counters, RNG) without pickle.

>>> from tapegrad import checkpoint
>>> checkpoint.FORMAT, checkpoint.VERSION
('tapegrad-checkpoint', 1)
"""

from ._checkpoint import FORMAT as FORMAT
from ._checkpoint import VERSION as VERSION
from ._checkpoint import CheckpointError as CheckpointError
from ._checkpoint import Metadata as Metadata
from ._checkpoint import load as load
from ._checkpoint import load_metadata as load_metadata
from ._checkpoint import save as save
