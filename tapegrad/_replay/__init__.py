"""Layer 4, the replay: ``tapegrad.replay`` traces a step once at the NumPy level and replays it.

The pipeline, the invariants and where a new pass or escape goes are in ``README.md`` here.

May import: ``tapegrad._arrays``, ``tapegrad._tree`` and ``tapegrad._core``. The optimizer
and the replay meet only in ``tapegrad._arrays._packed``.
"""
