"""Layer 4, the replay: `tapegrad.replay` traces a step once and then runs only its NumPy calls.

One file per step of its pipeline, bind -> trace -> passes -> codegen -> guard:

- ``_replayed``: `replay` and `Replayed`, which run the pipeline (the pass order is here);
  the trace, and the refusals of what a replay could not repeat.
- ``_signature``: a call's signature (`bind`) and the generated guard that checks it.
- ``_passes``: rewrites of the trace that reuse dead memory, each keeping every value bit for bit.
- ``_codegen``: the recorded instructions as one straight-line Python function.
- ``_random``: noticing random draws that a replay would freeze.

``README.md`` here walks through the pipeline, its invariants and where a new pass or escape goes.

May import: ``tapegrad._arrays``, ``tapegrad._tree`` and ``tapegrad._core``; never ``optim``,
``nn`` or ``torchlike``. The optimizer and the replay meet only in ``tapegrad._arrays._packed``.
"""
