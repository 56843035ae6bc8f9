"""Checkpoints: any pytree of tensors, arrays and Python scalars, in an ``.npz`` with no pickle.

A checkpoint is a zip of ``.npy`` entries. Each array-valued leaf (a `Tensor`
or a NumPy array) is the entry ``leaf_<i>``, ``i`` being its position among the
flattened leaves. The entry ``__tapegrad__`` holds a JSON header (UTF-8 bytes
as a uint8 array): the format name and version, the user's metadata, and for
each leaf its key path and kind, plus dtype and shape for arrays or the value
itself for Python scalars. Scalars live in the JSON because it holds them
exactly: a bit generator's state has ints wider than 64 bits, so ints are
written as strings: decimal up to 2000 bits, hex beyond (Python parses decimal
strings only up to its int-str limit, hex ones of any length).

Loading never unpickles (``allow_pickle=False``), so an untrusted file cannot
run code; the worst it can do is fail to load.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import attrs
import numpy as np

from . import _tree
from ._arrays._backend import to_device, to_host
from ._core._tensor import Tensor

T = TypeVar("T")

#: What `save` accepts as metadata: a flat mapping of JSON-friendly scalars.
Metadata: TypeAlias = Mapping[str, "str | int | float | bool"]

FORMAT = "tapegrad-checkpoint"
VERSION = 1
_HEADER = "__tapegrad__"
_ZIP_MAGIC = b"PK"
_ENCRYPTED = 0x1  # the zip general-purpose flag bit for an encrypted member
#: Ints up to this many bits are written in decimal: under 640 digits, which no
#: Python's int-str limit refuses. Wider ones are written in hex.
_DECIMAL_BITS = 2000
#: How to read each .npy header version's shape and dtype. np.save writes 1.0, 2.0
#: for a header over 64 kB, and 3.0 for non-Latin-1 field names: 3.0 is 2.0 in UTF-8,
#: so reading it as Latin-1 garbles only those names, never the shape or itemsize
#: (all the size checks need); read_array then reads it properly.
_NPY_HEADER_READERS: dict[
    tuple[int, int], Callable[[Any], tuple[tuple[int, ...], bool, np.dtype[Any]]]
] = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
    (3, 0): np.lib.format.read_array_header_2_0,
}

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
        return {"path": key, "kind": "int", "value": _int_to_json(leaf)}, None
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
        if isinstance(value, int) and value.bit_length() > _DECIMAL_BITS:
            # JSON holds metadata ints in decimal, which Python's int-str limit caps.
            raise ValueError(
                f"checkpoint.save: the metadata int {name!r} has {value.bit_length()} bits; "
                f"metadata ints are at most {_DECIMAL_BITS} bits. Store it in the state, "
                f"which holds ints of any size"
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

    Only the members the header names are read, and each is checked against
    ``like`` and the header before any of its data is: a hostile file cannot
    make loading allocate more than ``like``'s arrays and the file's own size.
    """
    file = Path(path)
    like_paths, like_leaves, treedef = _tree.flatten_with_paths(like)
    like_paths = [key or "<root>" for key in like_paths]
    with _open_archive(file) as archive:
        header = _read_header(file, archive)
        _check_structure(file, [leaf.path for leaf in header.leaves], like_paths)
        out = [
            _decode(file, archive, i, saved, expected)
            for i, (saved, expected) in enumerate(zip(header.leaves, like_leaves))
        ]
    return treedef.unflatten(out)  # type: ignore[no-any-return]


def load_metadata(path: str | os.PathLike[str]) -> dict[str, str | int | float | bool]:
    """The metadata mapping saved with a checkpoint (empty if none was given).

    Only the header is read, so this is quick even for a large checkpoint.
    """
    file = Path(path)
    with _open_archive(file) as archive:
        return dict(_read_header(file, archive).metadata)


@attrs.frozen
class _Archive:
    """An open checkpoint: its zip directory, and the file's size on disk."""

    zip: zipfile.ZipFile
    size: int


@contextlib.contextmanager
def _open_archive(file: Path) -> Iterator[_Archive]:
    """The zip archive at ``file``, with a missing, empty or non-zip file as `CheckpointError`."""
    if not file.exists():
        raise CheckpointError(
            f"{file}: no such checkpoint file; check the path (the directory holds "
            f"{_listing(file.parent)})"
        )
    if file.is_dir():
        raise CheckpointError(f"{file}: is a directory; pass the checkpoint file inside it")
    with open(file, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        start = f.read(2)
        if not start:
            raise CheckpointError(_truncated(file, "the file is empty"))
        if start != _ZIP_MAGIC:
            raise CheckpointError(
                f"{file}: not a tapegrad checkpoint: it is not an .npz (zip) archive; "
                f"was it written by tapegrad.checkpoint.save?"
            )
        try:
            opened = zipfile.ZipFile(f)
        # NotImplementedError: zipfile's answer to a damaged "version needed to extract".
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as exc:
            raise CheckpointError(_truncated(file, str(exc))) from None
        with opened:
            yield _Archive(opened, size)


def _read_header(file: Path, archive: _Archive) -> _Header:
    names = [n.removesuffix(".npy") for n in archive.zip.namelist()]
    if _HEADER not in names:
        raise CheckpointError(
            f"{file}: an .npz archive but not a tapegrad checkpoint: it has no "
            f"{_HEADER!r} header entry (it holds {', '.join(names) or 'nothing'}); "
            f"was it written by np.savez rather than tapegrad.checkpoint.save?"
        )
    raw = _read_member(file, archive, _HEADER, "the header", np.dtype(np.uint8).str, None)
    return _parse_header(file, raw)


def _read_member(
    file: Path,
    archive: _Archive,
    name: str,
    what: str,
    dtype: str | None,
    shape: tuple[int, ...] | None,
) -> np.ndarray[Any, Any]:
    """The array in member ``name``, once its sizes agree with ``dtype`` and ``shape``.

    Every size a member declares is checked before its data is read: the zip
    entry's against the file's size, and the .npy header's dtype and shape
    against ``dtype`` and ``shape`` (``None`` for the header: any 1-d array)
    and against the zip entry's. So what is allocated is never more than the
    file holds, whatever a damaged or hostile file declares.
    """
    try:
        info = archive.zip.getinfo(f"{name}.npy")
    except KeyError:
        raise CheckpointError(_truncated(file, f"the member for {what} is missing")) from None
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & _ENCRYPTED:
        # Compressed data could expand far beyond the file's size before any check.
        raise CheckpointError(
            f"{file}: not a tapegrad checkpoint: its member {name} is compressed or "
            f"encrypted, and tapegrad writes (and reads) only uncompressed members; "
            f"was it written by np.savez_compressed rather than tapegrad.checkpoint.save?"
        )
    if info.file_size != info.compress_size or info.header_offset + info.file_size > archive.size:
        raise CheckpointError(
            _truncated(
                file,
                f"the zip entry for {what} declares {info.file_size} bytes, "
                f"more than the {archive.size}-byte file holds",
            )
        )
    try:
        with archive.zip.open(info) as member:
            _check_npy_header(file, member, info.file_size, what, dtype, shape)
            member.seek(0)  # read_array reads (and checks) the .npy header itself
            return np.lib.format.read_array(member, allow_pickle=False)
    except CheckpointError:
        raise
    # NotImplementedError: zipfile's answer to damaged flag bits (patched data, strong encryption).
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(_truncated(file, str(exc) or type(exc).__name__)) from None


def _check_npy_header(
    file: Path, member: Any, entry_size: int, what: str, dtype: str | None, shape: tuple[int, ...] | None
) -> None:
    """Check a member's .npy header against what the checkpoint declares and its zip entry holds."""
    version = np.lib.format.read_magic(member)
    if version not in _NPY_HEADER_READERS:
        raise CheckpointError(_truncated(file, f"the member for {what} is in .npy format {version}"))
    found_shape, _, found_dtype = _NPY_HEADER_READERS[version](member)
    if found_dtype.hasobject:
        raise CheckpointError(
            f"{file}: not a tapegrad checkpoint: it holds pickled (object) data, "
            f"which tapegrad never writes and will not load, since unpickling can "
            f"run code"
        )
    declared = (dtype, shape) if shape is not None else (dtype, found_shape[:1])
    if (found_dtype.str, found_shape) != declared:
        expectation = (
            f"the header declares {dtype} of shape {shape}"
            if shape is not None
            else f"a header is a 1-d {dtype} array"
        )
        raise CheckpointError(
            _truncated(
                file,
                f"the member for {what} holds {found_dtype.str} of shape "
                f"{found_shape}, where {expectation}",
            )
        )
    data_size = math.prod(found_shape) * found_dtype.itemsize
    if member.tell() + data_size != entry_size:
        raise CheckpointError(
            _truncated(
                file,
                f"the member for {what} declares {data_size} bytes of data, but its "
                f"zip entry holds {entry_size - member.tell()}",
            )
        )


def _parse_header(file: Path, raw: np.ndarray[Any, Any]) -> _Header:
    not_ours = CheckpointError(
        f"{file}: not a tapegrad checkpoint: its {_HEADER!r} entry is not a valid "
        f"{FORMAT} header; was it written by tapegrad.checkpoint.save?"
    )
    try:
        doc = json.loads(raw.tobytes().decode())
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, or JSON nested too deep
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
    if not all(isinstance(v, str | int | float | bool) for v in metadata.values()):
        raise not_ours
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


def _decode(file: Path, archive: _Archive, i: int, saved: _Leaf, expected: Any) -> Any:
    """Leaf ``i`` rebuilt as the kind of ``expected``, after checking they agree."""
    want = _kind_of(expected)
    if saved.kind in _ARRAY_KINDS and want in _ARRAY_KINDS:
        # Header against `like` first: a header is small, an array need not be.
        want_dtype, want_shape = np.dtype(expected.dtype), tuple(expected.shape)
        if saved.dtype != want_dtype.str:
            shown = _dtype_name(saved.dtype)
            raise CheckpointError(
                f"{file}: dtype mismatch at {saved.path}: saved {shown}, `like` has "
                f"{want_dtype}; build `like` with dtype {shown}, or cast after loading"
            )
        if saved.shape != want_shape:
            raise CheckpointError(
                f"{file}: shape mismatch at {saved.path}: saved {saved.shape}, `like` has "
                f"{want_shape}; is it from a model with different layer sizes?"
            )
        array = _read_member(file, archive, f"leaf_{i}", saved.path, saved.dtype, want_shape)
        if array.dtype != want_dtype:  # a structured dtype's .str does not name its fields
            raise CheckpointError(
                f"{file}: dtype mismatch at {saved.path}: saved {array.dtype}, `like` has "
                f"{want_dtype}; build `like` with dtype {array.dtype}, or cast after loading"
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
        value = _int_from_json(saved.value) if cls is int else saved.value
    except (TypeError, ValueError):
        value = None
    if type(value) is not cls:
        raise CheckpointError(_truncated(file, f"the header's value at {saved.path} is corrupt"))
    return value


def _int_to_json(value: int) -> str:
    """An int as a string that any Python can parse back, however many digits it has."""
    # Python refuses decimal str()/int() beyond sys.get_int_max_str_digits() digits
    # (4300 by default, 640 at the least); hex, a power-of-two base, has no limit.
    return str(value) if value.bit_length() <= _DECIMAL_BITS else hex(value)


def _int_from_json(value: Any) -> int:
    if not isinstance(value, str):
        raise TypeError(value)
    return int(value, 16) if value.lstrip("-").startswith("0x") else int(value)


def _dtype_name(descr: Any) -> str:
    """A header's dtype string as NumPy names it, or as written if NumPy cannot read it."""
    try:
        return str(np.dtype(descr)) if isinstance(descr, str) else repr(descr)
    except (TypeError, ValueError, SyntaxError):
        return repr(descr)


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
