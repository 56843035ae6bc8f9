"""Layer 3, the engine: the tensor, recording, primitives, the ops and the tape.

- ``_tensor``: the immutable ``Tensor`` value and its operators.
- ``_primitive``, ``_dispatch``: what an op is, and how its arguments are checked and lifted.
- ``_math``, ``_reduce``, ``_shape``, ``_linalg``: the ops, each beside its vector-Jacobian rule.
- ``_record``: recording; which tapes are active, and ``emit``, which every op calls.
- ``_tape``: ``Tape.gradient``, the backward pass, which undoes broadcasting in one place.
- ``_anomaly``, ``_custom_vjp``: ``debug_nans`` and user-defined rules.

May import: ``tapegrad._arrays`` and ``tapegrad._tree``, never the replay, ``optim``, ``nn``
or ``torchlike``.

The package's one import cycle is here, by design: ``Tensor``'s operators call the op
modules, which build ``Tensor``s. It is closed by the import at the bottom of ``_tensor.py``,
and ``tests/import_layers.py`` lets no other import join it.
"""
