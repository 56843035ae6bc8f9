"""Layer 1, the arrays: what an array is, where its memory lies, and how many share one buffer.

- ``_backend``: devices (NumPy on the host, CuPy on a GPU) and the raw array kernels the
  rules share (``scatter_add``, ``zeros_for``).
- ``_traced``: the recording NumPy that `tapegrad.replay` traces with. The engine runs on it
  unchanged, as on CuPy, so it is an array backend too.
- ``_packed``: packed buffers, many arrays as views of one, and how to recognise them. The
  optimizer packs (``optim/_packing.py``); the replay recognises (``_replay/_signature.py``).
- ``_memory``: keep freed array memory in the process.

May import: NumPy (and CuPy where present), and other modules of this layer. Nothing here
knows a ``Tensor``, a tape or a pytree.
"""
