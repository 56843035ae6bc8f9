"""Checkpoints: exact round trips, a pinned message per failure, writes a crash cannot tear."""

from __future__ import annotations

import io
import json
import math
import os
import pathlib
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

import tapegrad as tg
from tapegrad import checkpoint, tree
from tapegrad.checkpoint import CheckpointError

TRUNCATED_FIX = (
    "it was probably cut off while being copied or written. Load an earlier checkpoint, "
    "or copy this one again"
)


@attrs.frozen
class Dense:
    weight: tg.Tensor
    bias: tg.Tensor


def make_state(seed: int) -> dict[str, Any]:
    """A training state with every kind of leaf; ``seed`` sets the values, not the structure."""
    rng = np.random.default_rng(seed)
    rng.normal(size=3)  # advance it, so the saved state is not a fresh generator's
    return {
        "params": [
            Dense(tg.tensor(rng.normal(size=(4, 3)).astype(np.float32)), tg.tensor(np.zeros(3))),
            Dense(tg.tensor(rng.normal(size=(3, 2))), tg.tensor([seed, -1])),
        ],
        "opt_state": (
            {"step": seed, "mu": np.full((2, 2), seed, dtype=np.float16)},
            [np.arange(5, dtype=np.uint8), np.array(seed > 0), np.float32(0.1)],
        ),
        "epoch": seed,
        "huge": -(2**100) - seed,
        "lr": 1e-3,
        "edge_floats": (-0.0, math.inf, math.nan),
        "frozen": True,
        "name": "mlp-ß",  # not ASCII
        "empty": np.zeros((0, 3), dtype=np.int32),
        "rng": rng.bit_generator.state,
    }


def assert_identical(got: Any, want: Any) -> None:
    """Same structure, same leaf types, and bit-identical values."""
    assert tree.structure(got) == tree.structure(want)
    paths, got_leaves, _ = tree.flatten_with_paths(got)
    for path, g, w in zip(paths, got_leaves, tree.leaves(want)):
        assert type(g) is type(w), path
        if isinstance(g, tg.Tensor):
            g, w = g.numpy(), w.numpy()
        if isinstance(g, np.ndarray | np.generic):
            assert (g.dtype, g.shape, g.tobytes()) == (w.dtype, w.shape, w.tobytes()), path
        elif isinstance(g, float):
            assert g.hex() == w.hex() or (math.isnan(g) and math.isnan(w)), path
        else:
            assert g == w, path


def test_round_trip_is_exact(tmp_path: Path) -> None:
    state = make_state(7)
    path = tmp_path / "model.ckpt"
    checkpoint.save(path, state, metadata={"epoch": 7, "loss": 0.25, "note": "ok", "best": True})
    loaded = checkpoint.load(path, like=make_state(0))
    assert_identical(loaded, state)
    assert checkpoint.load_metadata(path) == {"epoch": 7, "loss": 0.25, "note": "ok", "best": True}
    # The generator picks up exactly where the saved one was.
    rng, restored = np.random.default_rng(), np.random.default_rng()
    rng.bit_generator.state, restored.bit_generator.state = state["rng"], loaded["rng"]
    np.testing.assert_array_equal(rng.random(4), restored.random(4))


def test_tensor_and_array_follow_like(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, {"w": tg.tensor([1.0, 2.0]), "b": np.array([3.0])})
    loaded = checkpoint.load(path, like={"w": np.zeros(2, np.float32), "b": tg.tensor(np.zeros(1))})
    assert isinstance(loaded["w"], np.ndarray) and isinstance(loaded["b"], tg.Tensor)
    assert loaded["w"].tolist() == [1.0, 2.0] and loaded["b"].numpy().tolist() == [3.0]


def test_optimizer_state_round_trips_and_resumes_bit_for_bit(tmp_path: Path) -> None:
    # The step counts are 0-d int64 Tensors; they must come back as such, and the
    # resumed optimizer must take the very step the uninterrupted one takes.
    opt = tg.optim.adam(tg.optim.cosine_decay_schedule(1e-2, 10))
    params = {"w": tg.tensor(np.linspace(-1.0, 1.0, 6, dtype=np.float32).reshape(2, 3))}
    grads = {"w": tg.tensor(np.full((2, 3), 0.5, dtype=np.float32))}
    state = opt.init(params)
    for _ in range(3):
        params, state = opt.update(grads, state, params)
    checkpoint.save(tmp_path / "opt.ckpt", {"params": params, "opt_state": state})
    loaded = checkpoint.load(tmp_path / "opt.ckpt", {"params": params, "opt_state": opt.init(params)})
    adam_state, scale_state = loaded["opt_state"]
    for c in (adam_state.step, scale_state.count):
        assert isinstance(c, tg.Tensor) and c.shape == () and c.dtype == np.int64
        assert int(c.item()) == 3
    straight, _ = opt.update(grads, state, params)
    resumed, _ = opt.update(grads, loaded["opt_state"], loaded["params"])
    assert straight["w"].numpy().tobytes() == resumed["w"].numpy().tobytes()


def test_metadata_defaults_to_empty(tmp_path: Path) -> None:
    checkpoint.save(tmp_path / "c.ckpt", [1])
    assert checkpoint.load_metadata(tmp_path / "c.ckpt") == {}


def test_writes_exactly_the_given_name(tmp_path: Path) -> None:
    checkpoint.save(tmp_path / "model", {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.gpu
def test_tensors_come_back_on_likes_device(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, {"w": tg.tensor([1.0, 2.0], device="cuda")})
    on_gpu = checkpoint.load(path, like={"w": tg.tensor([0.0, 0.0], device="cuda")})
    on_cpu = checkpoint.load(path, like={"w": tg.tensor([0.0, 0.0])})
    assert (on_gpu["w"].device, on_cpu["w"].device) == ("cuda", "cpu")
    assert on_gpu["w"].numpy().tolist() == on_cpu["w"].numpy().tolist() == [1.0, 2.0]


# ---- errors, one pinned message each ----------------------------------------


def load_error(path: Path, like: Any) -> str:
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path, like)
    return str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    (tmp_path / "old.ckpt").write_bytes(b"")
    assert load_error(tmp_path / "model.ckpt", {}) == (
        f"{tmp_path}/model.ckpt: no such checkpoint file; check the path "
        f"(the directory holds old.ckpt)"
    )


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert load_error(tmp_path, {}) == (
        f"{tmp_path}: is a directory; pass the checkpoint file inside it"
    )


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("epoch 3: loss 0.1\n")
    assert load_error(path, {}) == (
        f"{path}: not a tapegrad checkpoint: it is not an .npz (zip) archive; "
        f"was it written by tapegrad.checkpoint.save?"
    )


def test_npz_without_header(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    np.savez(path, w=np.ones(2), b=np.zeros(1))
    assert load_error(path, {}) == (
        f"{path}: an .npz archive but not a tapegrad checkpoint: it has no '__tapegrad__' "
        f"header entry (it holds w, b); was it written by np.savez rather than "
        f"tapegrad.checkpoint.save?"
    )


def test_header_that_is_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    with path.open("wb") as f:
        np.savez(f, __tapegrad__=np.frombuffer(b'{"format": "other"}', np.uint8))
    assert load_error(path, {}) == (
        f"{path}: not a tapegrad checkpoint: its '__tapegrad__' entry is not a valid "
        f"tapegrad-checkpoint header; was it written by tapegrad.checkpoint.save?"
    )


def write_header(path: Path, header: dict[str, Any], savez: Any = np.savez, **members: Any) -> None:
    """Write ``header`` as the checkpoint's ``__tapegrad__`` member, beside ``members``, with ``savez``."""
    with path.open("wb") as f:
        savez(f, __tapegrad__=np.frombuffer(json.dumps(header).encode(), np.uint8), **members)


def test_newer_format_version(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    write_header(path, {"format": "tapegrad-checkpoint", "version": 2, "metadata": {}, "leaves": []})
    assert load_error(path, {}) == (
        f"{path}: written in checkpoint format version 2, but this tapegrad reads versions "
        f"up to 1; upgrade tapegrad to load it"
    )


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, {"w": np.arange(1000.0)})
    path.write_bytes(path.read_bytes()[:5000])
    assert load_error(path, {"w": np.zeros(1000)}) == (
        f"{path}: truncated or corrupt checkpoint (File is not a zip file); {TRUNCATED_FIX}"
    )


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    path.write_bytes(b"")
    assert load_error(path, {}) == (
        f"{path}: truncated or corrupt checkpoint (the file is empty); {TRUNCATED_FIX}"
    )
    with pytest.raises(CheckpointError):
        checkpoint.load_metadata(path)


def test_structure_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, make_state(1))
    other = make_state(1)
    other["params"] = other["params"][:1]  # a model with one layer fewer
    assert load_error(path, other) == (
        f"{path}: its structure does not match `like` (first difference at leaf 16: the "
        f"checkpoint has ['params'][1].weight where `like` has ['rng']['bit_generator']; "
        f"23 leaves saved, 21 expected). Is it from another architecture? Build `like` "
        f"the way the saved model was built"
    )


def test_structure_mismatch_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, [1, 2])
    assert load_error(path, [1, 2, 3]) == (
        f"{path}: its structure does not match `like` (first difference at leaf 2: only "
        f"`like` has [2]; 2 leaves saved, 3 expected). Is it from another architecture? "
        f"Build `like` the way the saved model was built"
    )


def test_dtype_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, {"w": tg.tensor(np.zeros((2, 2)))})
    assert load_error(path, {"w": tg.tensor(np.zeros((2, 2), np.float32))}) == (
        f"{path}: dtype mismatch at ['w']: saved float64, `like` has float32; build `like` "
        f"with dtype float64, or cast after loading"
    )


def test_shape_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, {"w": np.zeros((784, 128))})
    assert load_error(path, {"w": np.zeros((784, 64))}) == (
        f"{path}: shape mismatch at ['w']: saved (784, 128), `like` has (784, 64); "
        f"is it from a model with different layer sizes?"
    )


def test_kind_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, {"epoch": 3})
    assert load_error(path, {"epoch": 3.0}) == (
        f"{path}: kind mismatch at ['epoch']: saved a Python int, `like` has a Python float; "
        f"build `like` with the types the state was saved with"
    )


def test_pickled_data_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[Path]]:
            return (pathlib.Path.touch, (marker,))  # what unpickling would run

    path = tmp_path / "evil.ckpt"
    # The header names the member as floats, so it is read; an unnamed member never is.
    leaf = {"path": "['w']", "kind": "array", "dtype": "<f8", "shape": [1]}
    header = {"format": "tapegrad-checkpoint", "version": 1, "metadata": {}, "leaves": [leaf]}
    write_header(path, header, leaf_0=np.array([Payload()], dtype=object))
    assert load_error(path, {"w": np.zeros(1)}) == (
        f"{path}: not a tapegrad checkpoint: it holds pickled (object) data, which tapegrad "
        f"never writes and will not load, since unpickling can run code"
    )
    assert not marker.exists()


def test_save_rejects_unsupported_leaves(tmp_path: Path) -> None:
    with pytest.raises(TypeError) as info:
        checkpoint.save(tmp_path / "c.ckpt", {"f": len})
    assert str(info.value) == (
        "checkpoint.save: the leaf at ['f'] is a builtin_function_or_method; checkpoints hold "
        "Tensors, NumPy arrays and Python int/float/bool/str leaves. Convert it to one of "
        "those, or register its class as a pytree node with tapegrad.tree.register"
    )
    with pytest.raises(TypeError) as info:
        checkpoint.save(tmp_path / "c.ckpt", [np.array([{}], dtype=object)])
    assert str(info.value) == (
        "checkpoint.save: the array at [0] has dtype object, which only pickle can store; "
        "checkpoints never pickle. Use a numeric, bool or fixed-width string array"
    )
    with pytest.raises(TypeError) as info:
        bad: Any = {"shape": (1, 2)}
        checkpoint.save(tmp_path / "c.ckpt", [1], metadata=bad)
    assert str(info.value) == (
        "checkpoint.save: metadata must map str to str/int/float/bool, got 'shape': tuple; "
        "store anything larger in the state"
    )
    with pytest.raises(ValueError) as value_info:
        checkpoint.save(tmp_path / "c.ckpt", [1], metadata={"seed": 10**5000})
    assert str(value_info.value) == (
        "checkpoint.save: the metadata int 'seed' has 16610 bits; metadata ints are at most "
        "2000 bits. Store it in the state, which holds ints of any size"
    )
    assert list(tmp_path.iterdir()) == []


def test_save_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        checkpoint.save(tmp_path / "runs" / "c.ckpt", [1])
    assert str(info.value) == (
        f"checkpoint.save: the directory {tmp_path}/runs does not exist; create it first "
        f"(e.g. `Path('{tmp_path}/runs').mkdir(parents=True)`)"
    )


# ---- files from outside: hostile sizes, depths and ints --------------------


def npy_member(dtype: str, shape: tuple[int, ...], data: bytes) -> bytes:
    """A .npy file declaring ``dtype`` and ``shape``, followed by ``data`` whatever its length."""
    out = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + data


def write_checkpoint(path: Path, leaves: list[dict[str, Any]], **members: bytes) -> Path:
    """A stored (uncompressed) zip with a valid header naming ``leaves``, and ``members``."""
    header = {"format": "tapegrad-checkpoint", "version": 1, "metadata": {}, "leaves": leaves}
    raw = json.dumps(header).encode()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("__tapegrad__.npy", npy_member("|u1", (len(raw),), raw))
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


W_LEAF = {"path": "['w']", "kind": "array", "dtype": "<f8", "shape": [3]}


def test_unnamed_members_are_never_read(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, {"w": np.arange(3.0)})
    hostile = 64 * 2**20  # 64 MiB of zeros, which deflate to 64 kB
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("junk.npy", "w", force_zip64=True) as member:
            member.write(npy_member("|u1", (hostile,), b""))
            for _ in range(hostile // 2**20):
                member.write(bytes(2**20))
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        loaded = checkpoint.load(path, {"w": np.zeros(3)})
        metadata = checkpoint.load_metadata(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (loaded["w"].tolist(), metadata) == ([0.0, 1.0, 2.0], {})
    assert peak < 2**20, f"loading allocated {peak} bytes"


@pytest.mark.parametrize(
    ("member", "detail"),
    [
        (
            npy_member("<f8", (2**40,), bytes(24)),
            "the member for ['w'] holds <f8 of shape (1099511627776,), where the header "
            "declares <f8 of shape (3,)",
        ),
        (
            npy_member("<f4", (3,), bytes(12)),
            "the member for ['w'] holds <f4 of shape (3,), where the header declares <f8 "
            "of shape (3,)",
        ),
        (
            npy_member("<f8", (3,), bytes(16)),
            "the member for ['w'] declares 24 bytes of data, but its zip entry holds 16",
        ),
    ],
    ids=["2**40-elements", "other-dtype", "short-data"],
)
def test_a_member_that_disagrees_with_the_header(
    tmp_path: Path, member: bytes, detail: str
) -> None:
    path = write_checkpoint(tmp_path / "c.ckpt", [W_LEAF], leaf_0=member)
    tracemalloc.start()
    try:
        message = load_error(path, {"w": np.zeros(3)})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == f"{path}: truncated or corrupt checkpoint ({detail}); {TRUNCATED_FIX}"
    assert peak < 2**20, f"loading allocated {peak} bytes"


def test_a_header_member_that_declares_2_31_bytes(tmp_path: Path) -> None:
    # Both the .npy header and the zip entry claim 2 GiB; the file holds a few hundred bytes.
    path = tmp_path / "c.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("__tapegrad__.npy", npy_member("|u1", (2**31,), b"{}"))
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")  # the central directory's entry for the member
    declared = 2**31 + 128  # .npy header and data, as a real 2 GiB member would be
    data[entry + 20 : entry + 28] = struct.pack("<II", declared, declared)
    path.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as info:
            checkpoint.load_metadata(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value) == (
        f"{path}: truncated or corrupt checkpoint (the zip entry for the header declares "
        f"2147483776 bytes, more than the {len(data)}-byte file holds); {TRUNCATED_FIX}"
    )
    assert peak < 2**20, f"loading allocated {peak} bytes"


@pytest.mark.parametrize(
    ("offset", "value", "detail"),
    [
        (6, b"\xff\x00", "zip file version 25.5"),  # "version needed to extract"
        (8, b"\x20\x00", "compressed patched data (flag bit 5)"),  # general-purpose flags
        (8, b"\x40\x00", "strong encryption (flag bit 6)"),
    ],
    ids=["extract-version", "flag-bit-5", "flag-bit-6"],
)
def test_zip_features_zipfile_cannot_read(
    tmp_path: Path, offset: int, value: bytes, detail: str
) -> None:
    # zipfile raises NotImplementedError for these, on opening the archive or the member.
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, {"w": np.arange(3.0)})
    data = bytearray(path.read_bytes())
    # The header's entry in the central directory: 46 fixed bytes, then the member's name.
    entry = data.rindex(b"__tapegrad__.npy") - 46
    assert data[entry : entry + 4] == b"PK\x01\x02"
    data[entry + offset : entry + offset + 2] = value
    path.write_bytes(bytes(data))
    expected = f"{path}: truncated or corrupt checkpoint ({detail}); {TRUNCATED_FIX}"
    assert load_error(path, {"w": np.zeros(3)}) == expected
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        checkpoint.load_metadata(path)


def test_a_compressed_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    header = {"format": "tapegrad-checkpoint", "version": 1, "metadata": {}, "leaves": []}
    write_header(path, header, savez=np.savez_compressed)
    assert load_error(path, {}) == (
        f"{path}: not a tapegrad checkpoint: its member __tapegrad__ is compressed or "
        f"encrypted, and tapegrad writes (and reads) only uncompressed members; was it "
        f"written by np.savez_compressed rather than tapegrad.checkpoint.save?"
    )


@pytest.mark.parametrize(
    "raw",
    [
        b'{"format": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        json.dumps(
            {"format": "tapegrad-checkpoint", "version": 1, "metadata": {"a": [1]}, "leaves": []}
        ).encode(),
    ],
    ids=["nested-100000-deep", "metadata-not-a-scalar"],
)
def test_a_header_that_is_not_ours_in_depth(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "c.ckpt"
    with path.open("wb") as f:
        np.savez(f, __tapegrad__=np.frombuffer(raw, np.uint8))
    expected = (
        f"{path}: not a tapegrad checkpoint: its '__tapegrad__' entry is not a valid "
        f"tapegrad-checkpoint header; was it written by tapegrad.checkpoint.save?"
    )
    assert load_error(path, {}) == expected
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        checkpoint.load_metadata(path)


def test_ints_of_any_size_round_trip_under_any_int_str_limit(tmp_path: Path) -> None:
    state = {"small": -3, "wide": 2**2000 - 1, "huge": -(10**5000) - 7, "pcg": 2**128 + 1}
    path = tmp_path / "c.ckpt"
    limit = sys.get_int_max_str_digits()
    try:
        # The lowest limit Python allows; 4300 digits by default would refuse "huge" too.
        sys.set_int_max_str_digits(640)
        checkpoint.save(path, state)
        loaded = checkpoint.load(path, {key: 0 for key in state})
    finally:
        sys.set_int_max_str_digits(limit)
    assert loaded == state
    with np.load(path) as npz:
        leaves = json.loads(npz["__tapegrad__"].tobytes())["leaves"]
    # Decimal while any Python reads it back (so older tapegrads read these files), hex beyond.
    assert {leaf["path"]: leaf["value"] for leaf in leaves} == {
        "['huge']": hex(-(10**5000) - 7),
        "['pcg']": str(2**128 + 1),
        "['small']": "-3",
        "['wide']": str(2**2000 - 1),
    }


# ---- atomic writes ----------------------------------------------------------


@pytest.mark.parametrize("failure", [OSError("No space left on device"), KeyboardInterrupt()])
def test_failed_write_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    path = tmp_path / "model.ckpt"
    good = make_state(1)
    checkpoint.save(path, good)
    real_savez = np.savez

    def savez_then_fail(file: Any, *args: Any, **kwargs: Any) -> None:
        real_savez(file, *args, **kwargs)  # the bytes are written; then the "disk" fails
        raise failure

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(type(failure)):
        checkpoint.save(path, make_state(2))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]  # no temp file left
    assert_identical(checkpoint.load(path, like=make_state(0)), good)


CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from tapegrad import checkpoint

    path, n = sys.argv[1], int(sys.argv[2])
    for step in range(1000):
        state = {"step": step, "w": np.full(n, step + 0.5, dtype=np.float32)}
        print("start", step, flush=True)
        checkpoint.save(path, state)
        print("saved", step, flush=True)
    """
)


def test_sigkill_mid_write_keeps_last_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    n = 50 * 2**20 // 4  # 50 MB of float32, so a save takes long enough to interrupt
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        for expected in ("start 0", "saved 0", "start 1"):
            line = child.stdout.readline().strip()
            assert line == expected, child.stderr.read() if child.stderr else line
        # Wait until the second save's temp file exists, so the kill lands mid-write.
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob(".model.ckpt.*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    # The interrupted write's temp file is still there (nothing can clean up after
    # SIGKILL), which shows the kill landed mid-write, before the rename.
    assert len(list(tmp_path.glob(".model.ckpt.*.tmp"))) == 1
    like: dict[str, Any] = {"step": -1, "w": np.zeros(n, dtype=np.float32)}
    loaded = checkpoint.load(path, like)
    assert loaded["step"] == 0
    assert np.array_equal(loaded["w"], np.full(n, 0.5, dtype=np.float32))


def test_structured_dtypes_with_other_field_names_differ(tmp_path: Path) -> None:
    # Both are '|V16' as dtype.str, so only full dtype equality tells them apart.
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, {"w": np.zeros(2, dtype=[("x", "<f8"), ("y", "<f8")])})
    like = {"w": np.zeros(2, dtype=[("a", "<f8"), ("b", "<f8")])}
    assert load_error(path, like) == (
        f"{path}: dtype mismatch at ['w']: saved [('x', '<f8'), ('y', '<f8')], `like` has "
        f"[('a', '<f8'), ('b', '<f8')]; build `like` with dtype [('x', '<f8'), ('y', '<f8')], "
        f"or cast after loading"
    )


def test_structured_dtype_with_non_latin1_field_names_round_trips(tmp_path: Path) -> None:
    # NumPy stores these in .npy format 3.0, whose header is UTF-8.
    path = tmp_path / "c.ckpt"
    state = {"w": np.arange(2.0).astype([("日", "<f8")])}
    with pytest.warns(UserWarning, match=re.escape("Stored array in format 3.0")):
        checkpoint.save(path, state)  # NumPy's own warning
    assert_identical(checkpoint.load(path, {"w": np.zeros(2, dtype=[("日", "<f8")])}), state)


def test_fortran_ordered_arrays_round_trip(tmp_path: Path) -> None:
    # A transposed array is stored with fortran_order=True; its member declares the same shape.
    path = tmp_path / "c.ckpt"
    state = {"w_t": np.arange(6.0).reshape(2, 3).T, "t": tg.tensor(np.ones((3, 2)).T)}
    checkpoint.save(path, state)
    like = {"w_t": np.zeros((3, 2)), "t": tg.tensor(np.zeros((2, 3)))}
    assert_identical(checkpoint.load(path, like), state)
