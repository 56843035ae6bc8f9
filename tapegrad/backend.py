"""The array module that the stateful wrapper and the seed's scripts use.

``xp`` is NumPy, or CuPy when ``TAPEGRAD_DEVICE=cuda``; ``BACKEND_NAME`` names
it. The functional API never needs this: its ops follow their inputs' arrays.
"""

from types import ModuleType

from ._arrays._backend import default_device, module_for

xp: ModuleType = module_for(default_device())
BACKEND_NAME: str = xp.__name__
