"""Checkpoints: any pytree of tensors, arrays and Python scalars, in an ``.npz`` with no pickle.

A checkpoint is a zip of ``.npy`` entries. Each array-valued leaf (a `Tensor`
or a NumPy array) is the entry ``leaf_<i>``, ``i`` being its position among the
flattened leaves. The entry ``__tapegrad__`` holds a JSON header (UTF-8 bytes
as a uint8 array): the format name and version, the user's metadata, and for
each leaf its key path and kind, plus dtype and shape for arrays or the value
itself for Python scalars. Scalars live in the JSON because it holds them
exactly: a bit generator's state has ints wider than 64 bits, so ints are
written as decimal strings.

Loading never unpickles (``allow_pickle=False``), so an untrusted file cannot
run code; the worst it can do is fail to load.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import attrs
import numpy as np

from . import _tree
from ._backend import to_device, to_host
from ._tensor import Tensor

T = TypeVar("T")

#: What `save` accepts as metadata: a flat mapping of JSON-friendly scalars.
Metadata: TypeAlias = Mapping[str, "str | int | float | bool"]

FORMAT = "tapegrad-checkpoint"
VERSION = 1
_HEADER = "__tapegrad__"
_ZIP_MAGIC = b"PK"

_ARRAY_KINDS = ("tensor", "array")
_SCALAR_KINDS: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded: missing, not a checkpoint, truncated, or not like ``like``."""


@attrs.frozen
class _Leaf:
    """One leaf as the header describes it."""

    path: str
    kind: str  # one of _ARRAY_KINDS or _SCALAR_KINDS
    dtype: str | None = None  # arrays only, as `np.dtype.str` (e.g. '<f4')
    shape: tuple[int, ...] | None = None  # arrays only
    value: Any = None  # scalars only, as stored in the JSON


@attrs.frozen
class _Header:
    leaves: tuple[_Leaf, ...]
    metadata: dict[str, str | int | float | bool]


# ---- saving -----------------------------------------------------------------


def save(path: str | os.PathLike[str], state: Any, metadata: Metadata | None = None) -> None:
    """Write the pytree ``state`` to ``path`` atomically.

    Leaves may be Tensors, NumPy arrays, and Python ints (of any size),
    floats, bools and strings. The file is written at exactly ``path`` (no
    ``.npz`` is added). It is first written to a temporary file beside
    ``path``, synced to disk, then renamed over ``path``, so a crash mid-write
    leaves the previous checkpoint intact.

    >>> import numpy as np, tempfile, os
    >>> import tapegrad as tg
    >>> from tapegrad import checkpoint
    >>> state = {"w": tg.tensor([1.0, 2.0]), "epoch": 3}
    >>> path = os.path.join(tempfile.mkdtemp(), "model.ckpt")
    >>> checkpoint.save(path, state, metadata={"note": "after epoch 3"})
    >>> checkpoint.load(path, like={"w": tg.tensor([0.0, 0.0]), "epoch": 0})
    {'epoch': 3, 'w': Tensor([1., 2.], dtype=float32, device=cpu)}
    >>> checkpoint.load_metadata(path)
    {'note': 'after epoch 3'}
    """
    target = Path(path)
    paths, leaves, _ = _tree.flatten_with_paths(state)
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    records: list[dict[str, Any]] = []
    for i, (key, leaf) in enumerate(zip(paths, leaves)):
        record, array = _encode(key or "<root>", leaf)
        records.append(record)
        if array is not None:
            arrays[f"leaf_{i}"] = array
    header = {
        "format": FORMAT,
        "version": VERSION,
        "metadata": _check_metadata(metadata),
        "leaves": records,
    }
    arrays[_HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    _write_atomically(target, arrays)


def _encode(key: str, leaf: Any) -> tuple[dict[str, Any], np.ndarray[Any, Any] | None]:
    """A leaf's header record, and its array when it has one."""
    # bool before int: True is an int too.
    if isinstance(leaf, bool):
        return {"path": key, "kind": "bool", "value": leaf}, None
    if isinstance(leaf, int):
        return {"path": key, "kind": "int", "value": str(leaf)}, None
    if isinstance(leaf, float):
        return {"path": key, "kind": "float", "value": leaf}, None
    if isinstance(leaf, str):
        return {"path": key, "kind": "str", "value": leaf}, None
    if isinstance(leaf, Tensor):
        kind, array = "tensor", to_host(leaf.data)
    elif isinstance(leaf, np.ndarray | np.generic):
        kind, array = "array", np.asarray(leaf)
    else:
        raise TypeError(
            f"checkpoint.save: the leaf at {key} is a {type(leaf).__name__}; checkpoints hold "
            f"Tensors, NumPy arrays and Python int/float/bool/str leaves. Convert it to one "
            f"of those, or register its class as a pytree node with tapegrad.tree.register"
        )
    if array.dtype.hasobject:
        raise TypeError(
            f"checkpoint.save: the array at {key} has dtype object, which only pickle can "
            f"store; checkpoints never pickle. Use a numeric, bool or fixed-width string array"
        )
    record = {"path": key, "kind": kind, "dtype": array.dtype.str, "shape": list(array.shape)}
    return record, array


def _check_metadata(metadata: Metadata | None) -> dict[str, str | int | float | bool]:
    checked: dict[str, str | int | float | bool] = {}
    for name, value in (metadata or {}).items():
        if not isinstance(name, str) or not isinstance(value, str | int | float | bool):
            raise TypeError(
                f"checkpoint.save: metadata must map str to str/int/float/bool, got "
                f"{name!r}: {type(value).__name__}; store anything larger in the state"
            )
        checked[name] = value
    return checked


def _write_atomically(target: Path, arrays: dict[str, np.ndarray[Any, Any]]) -> None:
    """Write the archive beside ``target``, sync it, then rename it over ``target``."""
    directory = target.parent
    if not directory.is_dir():
        raise FileNotFoundError(
            f"checkpoint.save: the directory {directory} does not exist; create it first "
            f"(e.g. `Path({str(directory)!r}).mkdir(parents=True)`)"
        )
    # Same directory, so os.replace is a rename within one filesystem, which
    # POSIX makes atomic: readers see the old file or the new one, never half.
    tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed before the rename
        dir=directory, prefix=f".{target.name}.", suffix=".tmp", delete=False
    )
    try:
        with tmp:
            np.savez(tmp, allow_pickle=False, **arrays)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp.name, 0o644)  # mkstemp makes 0600 files; a checkpoint is ordinary data
        os.replace(tmp.name, target)
    except BaseException:  # KeyboardInterrupt too: never leave a stray temp file
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp.name)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself, so a power cut cannot bring back the old name's entry."""
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---- loading ----------------------------------------------------------------


def load(path: str | os.PathLike[str], like: T) -> T:
    """Read a checkpoint into the structure of ``like``.

    ``like`` is a pytree of the same shape as the saved state (fresh
    parameters, say): its key paths, and each array's dtype and shape, must
    match what was saved, or `CheckpointError` names the first difference.
    Tensors come back as Tensors on the device of ``like``'s tensor, arrays as
    NumPy arrays, and Python scalars as Python scalars; a Tensor and an array
    are interchangeable, and what comes back follows ``like``.
    """
    file = Path(path)
    header, arrays = _read(file, with_arrays=True)
    like_paths, like_leaves, treedef = _tree.flatten_with_paths(like)
    like_paths = [key or "<root>" for key in like_paths]
    _check_structure(file, [leaf.path for leaf in header.leaves], like_paths)
    out = [
        _decode(file, i, saved, expected, arrays)
        for i, (saved, expected) in enumerate(zip(header.leaves, like_leaves))
    ]
    return treedef.unflatten(out)  # type: ignore[no-any-return]


def load_metadata(path: str | os.PathLike[str]) -> dict[str, str | int | float | bool]:
    """The metadata mapping saved with a checkpoint (empty if none was given).

    Only the header is read, so this is quick even for a large checkpoint.
    """
    header, _ = _read(Path(path), with_arrays=False)
    return dict(header.metadata)


def _read(file: Path, with_arrays: bool) -> tuple[_Header, dict[str, np.ndarray[Any, Any]]]:
    """The header and (optionally) every array entry, with I/O failures as `CheckpointError`."""
    if not file.exists():
        raise CheckpointError(
            f"{file}: no such checkpoint file; check the path (the directory holds "
            f"{_listing(file.parent)})"
        )
    if file.is_dir():
        raise CheckpointError(f"{file}: is a directory; pass the checkpoint file inside it")
    with open(file, "rb") as f:
        start = f.read(2)
    if not start:
        raise CheckpointError(_truncated(file, "the file is empty"))
    if start != _ZIP_MAGIC:
        raise CheckpointError(
            f"{file}: not a tapegrad checkpoint: it is not an .npz (zip) archive; "
            f"was it written by tapegrad.checkpoint.save?"
        )
    try:
        # Our own handle, closed even when the zip turns out truncated (np.load leaks its own).
        with open(file, "rb") as f, np.load(f, allow_pickle=False) as npz:
            names = list(npz.files)
            raw = npz[_HEADER] if _HEADER in names else None
            wanted = [n for n in names if n != _HEADER] if with_arrays and raw is not None else []
            arrays = {name: npz[name] for name in wanted}
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CheckpointError(_truncated(file, str(exc))) from None
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # NumPy's words for an object array
            raise CheckpointError(
                f"{file}: not a tapegrad checkpoint: it holds pickled (object) data, which "
                f"tapegrad never writes and will not load, since unpickling can run code"
            ) from None
        raise CheckpointError(_truncated(file, str(exc))) from None
    if raw is None:
        raise CheckpointError(
            f"{file}: an .npz archive but not a tapegrad checkpoint: it has no "
            f"{_HEADER!r} header entry (it holds {', '.join(names) or 'nothing'}); "
            f"was it written by np.savez rather than tapegrad.checkpoint.save?"
        )
    return _parse_header(file, raw), arrays


def _parse_header(file: Path, raw: np.ndarray[Any, Any]) -> _Header:
    not_ours = CheckpointError(
        f"{file}: not a tapegrad checkpoint: its {_HEADER!r} entry is not a valid "
        f"{FORMAT} header; was it written by tapegrad.checkpoint.save?"
    )
    try:
        doc = json.loads(raw.tobytes().decode())
    except ValueError:  # bad UTF-8 or bad JSON
        raise not_ours from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise not_ours
    version = doc.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{file}: written in checkpoint format version {version!r}, but this "
            f"tapegrad reads versions up to {VERSION}; upgrade tapegrad to load it"
        )
    try:
        leaves = tuple(
            _Leaf(
                path=str(r["path"]),
                kind=str(r["kind"]),
                dtype=r.get("dtype"),
                shape=tuple(r["shape"]) if "shape" in r else None,
                value=r.get("value"),
            )
            for r in doc["leaves"]
        )
        metadata = dict(doc["metadata"])
    except (ValueError, TypeError, KeyError, AttributeError):  # a field missing or mistyped
        raise not_ours from None
    return _Header(leaves, metadata)


def _check_structure(file: Path, saved: list[str], expected: list[str]) -> None:
    if saved == expected:
        return
    for i, (s, e) in enumerate(zip(saved, expected)):
        if s != e:
            where = f"leaf {i}: the checkpoint has {s} where `like` has {e}"
            break
    else:
        n = min(len(saved), len(expected))
        extra = saved[n] if len(saved) > n else expected[n]
        owner = "the checkpoint" if len(saved) > n else "`like`"
        where = f"leaf {n}: only {owner} has {extra}"
    raise CheckpointError(
        f"{file}: its structure does not match `like` (first difference at {where}; "
        f"{len(saved)} leaves saved, {len(expected)} expected). Is it from another "
        f"architecture? Build `like` the way the saved model was built"
    )


def _decode(
    file: Path, i: int, saved: _Leaf, expected: Any, arrays: dict[str, np.ndarray[Any, Any]]
) -> Any:
    """Leaf ``i`` rebuilt as the kind of ``expected``, after checking they agree."""
    want = _kind_of(expected)
    if saved.kind in _ARRAY_KINDS and want in _ARRAY_KINDS:
        array = _array_entry(file, i, saved, arrays)
        want_dtype, want_shape = np.dtype(expected.dtype), tuple(expected.shape)
        if array.dtype != want_dtype:
            raise CheckpointError(
                f"{file}: dtype mismatch at {saved.path}: saved {array.dtype}, `like` has "
                f"{want_dtype}; build `like` with dtype {array.dtype}, or cast after loading"
            )
        if array.shape != want_shape:
            raise CheckpointError(
                f"{file}: shape mismatch at {saved.path}: saved {array.shape}, `like` has "
                f"{want_shape}; is it from a model with different layer sizes?"
            )
        if isinstance(expected, Tensor):
            return Tensor(to_device(array, expected.device))
        return array[()] if isinstance(expected, np.generic) else array
    if saved.kind != want:
        raise CheckpointError(
            f"{file}: kind mismatch at {saved.path}: saved a {_describe(saved.kind)}, `like` "
            f"has a {_describe(want)}; build `like` with the types the state was saved with"
        )
    cls = _SCALAR_KINDS[saved.kind]
    try:
        value = int(saved.value) if cls is int else saved.value
    except (TypeError, ValueError):
        value = None
    if type(value) is not cls:
        raise CheckpointError(_truncated(file, f"the header's value at {saved.path} is corrupt"))
    return value


def _kind_of(leaf: Any) -> str:
    if isinstance(leaf, Tensor):
        return "tensor"
    if isinstance(leaf, np.ndarray | np.generic):
        return "array"
    for kind, cls in _SCALAR_KINDS.items():  # bool first: True is an int too
        if isinstance(leaf, cls):
            return kind
    return type(leaf).__name__


def _describe(kind: str) -> str:
    if kind in _SCALAR_KINDS:
        return f"Python {kind}"
    return {"tensor": "Tensor", "array": "NumPy array"}.get(kind, kind)


def _array_entry(
    file: Path, i: int, saved: _Leaf, arrays: dict[str, np.ndarray[Any, Any]]
) -> np.ndarray[Any, Any]:
    array = arrays.get(f"leaf_{i}")
    if array is None or array.dtype.str != saved.dtype or array.shape != saved.shape:
        raise CheckpointError(
            _truncated(file, f"the array for {saved.path} is missing or disagrees with the header")
        )
    return array


def _truncated(file: Path, detail: str) -> str:
    return (
        f"{file}: truncated or corrupt checkpoint ({detail}); it was probably cut off while "
        f"being copied or written. Load an earlier checkpoint, or copy this one again"
    )


def _listing(directory: Path) -> str:
    try:
        names = sorted(p.name for p in directory.iterdir())
    except OSError:
        return "nothing: the directory does not exist"
    if not names:
        return "nothing"
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")
