"""MNIST from the four IDX files torchvision leaves in ``<root>/MNIST/raw/``.

Once the files are on disk we read them with NumPy alone: importing torch takes
seconds, parsing an IDX file takes milliseconds. torchvision is imported only
when the files are missing, to download and verify them (it checks md5s and
knows the mirrors), and it is an optional extra, so its absence must read as a
fix to apply, not a traceback.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

#: The files of one split: (images, labels).
_SPLITS: dict[bool, tuple[str, str]] = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_ALL_FILES = (*_SPLITS[True], *_SPLITS[False])

# IDX magic numbers: two zero bytes, a type code (0x08 = unsigned byte), then
# the number of dimensions. Every integer in the header is big-endian.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_ROWS = _COLS = 28
_NUM_CLASSES = 10

_REFETCH = (
    "delete it and run again with network access so torchvision downloads it again "
    "(`pip install 'tapegrad[examples]'`), or copy a good one there"
)


class DatasetError(RuntimeError):
    """A dataset's files are missing, truncated or corrupt; the message says how to fix it."""


def resolve_data_dir(cli_value: str | None) -> Path:
    """Where datasets live: the ``--data-dir`` value, else ``$TAPEGRAD_DATA``, else ``./data``.

    >>> str(resolve_data_dir("/srv/datasets"))
    '/srv/datasets'
    """
    if cli_value:
        return Path(cli_value).expanduser()
    from_env = os.environ.get("TAPEGRAD_DATA")
    if from_env:
        return Path(from_env).expanduser()
    return Path("data")


def load_mnist(
    root: str | os.PathLike[str], train: bool, download: bool = True
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """MNIST's training (60,000) or test (10,000) split as ``(images, labels)``.

    ``images`` is uint8 of shape ``(N, 28, 28)`` and ``labels`` int64 of shape
    ``(N,)``, equal to torchvision's ``MNIST(root, train).data`` and ``.targets``.
    ``root`` is the folder that holds ``MNIST/``, as for torchvision. When the
    files are missing and ``download`` is true, torchvision fetches them;
    otherwise, or when that fails, `DatasetError` says where to put them.

    >>> images, labels = load_mnist("../shared/data", train=False, download=False)
    >>> images.shape, images.dtype, labels[:5]
    ((10000, 28, 28), dtype('uint8'), array([7, 2, 1, 0, 4]))
    """
    raw = Path(root) / "MNIST" / "raw"
    image_file, label_file = (raw / name for name in _SPLITS[train])
    missing = [p.name for p in (image_file, label_file) if not p.exists()]
    if missing:
        if not download:
            raise DatasetError(_missing_message(raw, missing, "download=False was passed"))
        _download(root, train, raw, missing)
    images = _read_idx(image_file, _IMAGES_MAGIC, "images")
    labels = _read_idx(label_file, _LABELS_MAGIC, "labels")
    if len(images) != len(labels):
        raise DatasetError(
            f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} "
            f"labels; the two files come from different downloads. Delete both and run again "
            f"with network access so torchvision downloads them again, "
            f"or copy a matching pair there"
        )
    if len(labels) and int(labels.max()) >= _NUM_CLASSES:
        bad = int(np.argmax(labels >= _NUM_CLASSES))
        raise DatasetError(
            f"{label_file}: labels must be 0..9, but label {bad} is {int(labels[bad])}; "
            f"the file is corrupt: {_REFETCH}"
        )
    return images, labels.astype(np.int64)


def _read_idx(path: Path, magic: int, what: str) -> NDArray[np.uint8]:
    """One unsigned-byte IDX file as an array shaped as its header says."""
    ndim = magic & 0xFF
    header_size = 4 * (1 + ndim)
    if path.is_dir():
        raise DatasetError(
            f"{path}: is a directory, where the MNIST {what} file should be; "
            f"remove the directory, then run again with network access so torchvision "
            f"downloads the file (`pip install 'tapegrad[examples]'`), or copy a good one there"
        )
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header = f.read(header_size)
        if len(header) < 4:
            raise DatasetError(
                f"{path}: the file is {size} bytes, too short for an IDX header; "
                f"it is truncated: {_REFETCH}"
            )
        found = int.from_bytes(header[:4], "big")
        if found != magic:
            raise DatasetError(
                f"{path}: not an MNIST {what} file: its magic number is 0x{found:08x}, "
                f"expected 0x{magic:08x} (unsigned bytes, {ndim} dimension"
                f"{'s' if ndim > 1 else ''}); {_REFETCH}"
            )
        if len(header) < header_size:
            raise DatasetError(
                f"{path}: the file is {size} bytes, too short for its {header_size}-byte header; "
                f"it is truncated: {_REFETCH}"
            )
        dims = tuple(int.from_bytes(header[i : i + 4], "big") for i in range(4, header_size, 4))
        # Python ints: np.prod would wrap around int64 for a hostile header's dims.
        expected = header_size + math.prod(dims)
        if size != expected:
            problem = "truncated" if size < expected else "longer than that, so it is corrupt"
            raise DatasetError(
                f"{path}: the header promises {' x '.join(map(str, dims))} {what} "
                f"({expected} bytes with the header) but the file is {size} bytes: it is "
                f"{problem}; {_REFETCH}"
            )
        # Before reshaping: a header of 0 images of 2**32-1 x 2**32-1 pixels agrees with
        # the file's size, but is a shape no array can have.
        if magic == _IMAGES_MAGIC and dims[1:] != (_ROWS, _COLS):
            raise DatasetError(
                f"{path}: MNIST images are {_ROWS}x{_COLS} pixels, but the header says "
                f"{'x'.join(map(str, dims[1:]))}; {_REFETCH}"
            )
        data = np.fromfile(f, dtype=np.uint8, count=expected - header_size)
    return data.reshape(dims)


def _missing_message(raw: Path, missing: list[str], reason: str) -> str:
    return (
        f"MNIST files missing from {raw.resolve()}/: {', '.join(missing)} ({reason}). "
        f"That folder should hold the four uncompressed IDX files {', '.join(_ALL_FILES)}. "
        f"To fix: install the examples extra (`pip install 'tapegrad[examples]'`) and run "
        f"with network access so torchvision downloads them, or copy the four files there"
    )


def _download(root: str | os.PathLike[str], train: bool, raw: Path, missing: list[str]) -> None:
    """Have torchvision fetch and verify the split's files into ``raw``."""
    try:
        from torchvision.datasets import MNIST
    except ImportError:
        raise DatasetError(_missing_message(raw, missing, "torchvision is not installed")) from None
    try:
        MNIST(root=os.fspath(root), train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - any failure to fetch means the same fix
        raise DatasetError(
            _missing_message(raw, missing, f"the download failed: {_first_line(exc)}")
        ) from None


def _first_line(exc: Exception) -> str:
    """The exception's type and first line: torchvision's errors list every mirror tried."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
