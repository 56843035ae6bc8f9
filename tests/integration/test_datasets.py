"""MNIST loading: torchvision's arrays, read without torch, with clear errors for bad files."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from tapegrad.datasets import DatasetError, load_mnist, resolve_data_dir

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
REFETCH = (
    "delete it and run again with network access so torchvision downloads it again "
    "(`pip install 'tapegrad[examples]'`), or copy a good one there"
)
FOUR = (
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte"
)


def write_idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes) -> Path:
    """An IDX file: big-endian magic and dims, then the raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(header + payload)
    return path


def tiny_split(root: Path, n: int = 3, labels: bytes | None = None) -> tuple[Path, Path]:
    """A valid test split of ``n`` images under ``root/MNIST/raw``."""
    raw = root / "MNIST" / "raw"
    images = write_idx(raw / "t10k-images-idx3-ubyte", 0x803, (n, 28, 28), bytes(n * 784))
    labels_path = write_idx(raw / "t10k-labels-idx1-ubyte", 0x801, (n,), labels or bytes(range(n)))
    return images, labels_path


@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
def test_arrays_equal_torchvision(train: bool) -> None:
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.datasets.MNIST(str(DATA), train=train, download=False)
    images, labels = load_mnist(DATA, train=train, download=False)
    expected_images, expected_labels = reference.data.numpy(), reference.targets.numpy()
    assert images.dtype == expected_images.dtype == np.uint8
    assert labels.dtype == expected_labels.dtype == np.int64
    assert images.shape == (60000 if train else 10000, 28, 28)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)


def test_warm_load_skips_torch_and_reports_its_time() -> None:
    # A fresh interpreter, so nothing this test session imported can hide a torch import.
    code = (
        "import sys, time\n"
        "from tapegrad.datasets import load_mnist\n"
        "start = time.perf_counter()\n"
        f"train = load_mnist({str(DATA)!r}, train=True, download=False)\n"
        "middle = time.perf_counter()\n"
        f"test = load_mnist({str(DATA)!r}, train=False, download=False)\n"
        "end = time.perf_counter()\n"
        "print(f'{middle - start:.4f} {end - middle:.4f}', 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    train_s, test_s, torch_loaded = done.stdout.split()
    # Timed, not asserted: a loaded CI machine must not fail this test.
    print(f"warm MNIST load: train {float(train_s):.3f} s, test {float(test_s):.3f} s")
    assert torch_loaded == "False"


def test_reads_files_torchvision_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, bool, bool]] = []

    class FakeMNIST:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            tiny_split(Path(root), n=2)

    fake_datasets = types.ModuleType("torchvision.datasets")
    fake_datasets.MNIST = FakeMNIST  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake_datasets)
    images, labels = load_mnist(tmp_path, train=False)
    assert calls == [(str(tmp_path), False, True)]
    assert images.shape == (2, 28, 28) and labels.tolist() == [0, 1]


def test_missing_without_download(tmp_path: Path) -> None:
    raw = (tmp_path / "MNIST" / "raw").resolve()
    with pytest.raises(DatasetError) as info:
        load_mnist(tmp_path, train=True, download=False)
    assert str(info.value) == (
        f"MNIST files missing from {raw}/: train-images-idx3-ubyte, train-labels-idx1-ubyte "
        f"(download=False was passed). That folder should hold the four uncompressed IDX files "
        f"{FOUR}. To fix: install the examples extra (`pip install 'tapegrad[examples]'`) and "
        f"run with network access so torchvision downloads them, or copy the four files there"
    )


def test_missing_without_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import torchvision` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    tiny_split(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError) as info:
        load_mnist(tmp_path, train=False)
    raw = (tmp_path / "MNIST" / "raw").resolve()
    assert str(info.value) == (
        f"MNIST files missing from {raw}/: t10k-labels-idx1-ubyte "
        f"(torchvision is not installed). That folder should hold the four uncompressed IDX "
        f"files {FOUR}. To fix: install the examples extra (`pip install 'tapegrad[examples]'`) "
        f"and run with network access so torchvision downloads them, or copy the four files there"
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_when_download_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class OfflineMNIST:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            # What torchvision raises with no network: one paragraph per mirror tried.
            raise RuntimeError(
                "Error downloading train-images-idx3-ubyte.gz:\n"
                "Tried https://ossci-datasets.s3.amazonaws.com/mnist/, got:\n"
                "<urlopen error [Errno -3] Temporary failure in name resolution>\n"
            )

    fake_datasets = types.ModuleType("torchvision.datasets")
    fake_datasets.MNIST = OfflineMNIST  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake_datasets)
    with pytest.raises(DatasetError) as info:
        load_mnist(tmp_path, train=True)
    raw = (tmp_path / "MNIST" / "raw").resolve()
    assert str(info.value) == (
        f"MNIST files missing from {raw}/: train-images-idx3-ubyte, train-labels-idx1-ubyte "
        f"(the download failed: RuntimeError: Error downloading train-images-idx3-ubyte.gz:). "
        f"That folder should hold the four uncompressed IDX files {FOUR}. To fix: install the "
        f"examples extra (`pip install 'tapegrad[examples]'`) and run with network access so "
        f"torchvision downloads them, or copy the four files there"
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__


def corrupt_split_error(root: Path) -> str:
    """The message of the `DatasetError` that loading the (damaged) test split raises."""
    with pytest.raises(DatasetError) as info:
        load_mnist(root, train=False, download=False)
    return str(info.value)


def test_wrong_magic(tmp_path: Path) -> None:
    images, _ = tiny_split(tmp_path)
    write_idx(images, 0x801, (3,), bytes(3))  # a labels file under the images' name
    assert corrupt_split_error(tmp_path) == (
        f"{images}: not an MNIST images file: its magic number is 0x00000801, expected "
        f"0x00000803 (unsigned bytes, 3 dimensions); {REFETCH}"
    )


def test_truncated_data(tmp_path: Path) -> None:
    images, _ = tiny_split(tmp_path)
    images.write_bytes(images.read_bytes()[:-100])
    assert corrupt_split_error(tmp_path) == (
        f"{images}: the header promises 3 x 28 x 28 images (2368 bytes with the header) but "
        f"the file is 2268 bytes: it is truncated; {REFETCH}"
    )


def test_trailing_bytes(tmp_path: Path) -> None:
    _, labels = tiny_split(tmp_path)
    labels.write_bytes(labels.read_bytes() + b"\x00")
    assert corrupt_split_error(tmp_path) == (
        f"{labels}: the header promises 3 labels (11 bytes with the header) but the file is "
        f"12 bytes: it is longer than that, so it is corrupt; {REFETCH}"
    )


def test_truncated_header(tmp_path: Path) -> None:
    images, _ = tiny_split(tmp_path)
    images.write_bytes(images.read_bytes()[:10])
    assert corrupt_split_error(tmp_path) == (
        f"{images}: the file is 10 bytes, too short for its 16-byte header; "
        f"it is truncated: {REFETCH}"
    )


def test_empty_file(tmp_path: Path) -> None:
    _, labels = tiny_split(tmp_path)
    labels.write_bytes(b"")
    assert corrupt_split_error(tmp_path) == (
        f"{labels}: the file is 0 bytes, too short for an IDX header; it is truncated: {REFETCH}"
    )


def test_wrong_image_size(tmp_path: Path) -> None:
    images, _ = tiny_split(tmp_path)
    write_idx(images, 0x803, (3, 32, 32), bytes(3 * 32 * 32))
    assert corrupt_split_error(tmp_path) == (
        f"{images}: MNIST images are 28x28 pixels, but the header says 32x32; {REFETCH}"
    )


def test_label_out_of_range(tmp_path: Path) -> None:
    _, labels = tiny_split(tmp_path, labels=bytes([3, 12, 4]))
    assert corrupt_split_error(tmp_path) == (
        f"{labels}: labels must be 0..9, but label 1 is 12; the file is corrupt: {REFETCH}"
    )


def test_counts_disagree(tmp_path: Path) -> None:
    images, labels = tiny_split(tmp_path)
    write_idx(labels, 0x801, (2,), bytes(2))
    assert corrupt_split_error(tmp_path) == (
        f"{images} holds 3 images but {labels} holds 2 labels; the two files come from "
        f"different downloads. Delete both and run again with network access so torchvision "
        f"downloads them again, or copy a matching pair there"
    )


def test_resolve_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPEGRAD_DATA", "/from/env")
    assert resolve_data_dir("/from/cli") == Path("/from/cli")
    assert resolve_data_dir(None) == Path("/from/env")
    monkeypatch.delenv("TAPEGRAD_DATA")
    assert resolve_data_dir(None) == Path("data")


def test_dims_whose_product_overflows_int64(tmp_path: Path) -> None:
    # 2**31 * 2**31 * 4 = 2**64, which int64 arithmetic wraps to 0: exactly this empty payload.
    images, _ = tiny_split(tmp_path)
    write_idx(images, 0x803, (2**31, 2**31, 4), b"")
    assert corrupt_split_error(tmp_path) == (
        f"{images}: the header promises 2147483648 x 2147483648 x 4 images "
        f"(18446744073709551632 bytes with the header) but the file is 16 bytes: it is "
        f"truncated; {REFETCH}"
    )


def test_directory_in_place_of_a_file(tmp_path: Path) -> None:
    _, labels = tiny_split(tmp_path)
    labels.unlink()
    labels.mkdir()
    assert corrupt_split_error(tmp_path) == (
        f"{labels}: is a directory, where the MNIST labels file should be; remove the "
        f"directory, then run again with network access so torchvision downloads the file "
        f"(`pip install 'tapegrad[examples]'`), or copy a good one there"
    )


def test_empty_file_whose_image_size_overflows(tmp_path: Path) -> None:
    # 0 images of 4294967295 x 4294967295: the file's size agrees (a bare header), but no
    # array can have that shape, so the pixel size is checked before reshaping.
    images, _ = tiny_split(tmp_path)
    write_idx(images, 0x803, (0, 2**32 - 1, 2**32 - 1), b"")
    assert corrupt_split_error(tmp_path) == (
        f"{images}: MNIST images are 28x28 pixels, but the header says "
        f"4294967295x4294967295; {REFETCH}"
    )
