"""What both MNIST scripts share: the command line, the data and its splits.

The splits are the seed article's: train on train[:8000], validate on
train[8000:10000], test on test[:1000]. ``--full`` uses 55,000 / 5,000 and the
whole 10,000-image test set.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

import attrs
import numpy as np

from tapegrad.datasets import DatasetError, load_mnist, resolve_data_dir


@attrs.frozen
class Split:
    """Images as flat ``(n, 784)`` arrays in the training dtype, and int64 labels."""

    images: np.ndarray
    labels: np.ndarray


@attrs.frozen
class MnistSplits:
    """The training, validation and test splits."""

    train: Split
    val: Split
    test: Split


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both scripts take."""
    parser.add_argument("--data-dir", default=None,
                        help="where MNIST lives or is downloaded to (default: $TAPEGRAD_DATA, else ./data)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default 10, or 20 with --full)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--full", action="store_true",
                        help="train on 55,000 images, validate on 5,000, test on all 10,000")
    parser.add_argument("--train-size", type=int, default=None, help="use only this many training images")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--plot", default="mnist_curves.png", help="where to save the loss/accuracy plot")
    parser.add_argument("--no-plot", action="store_true", help="skip the plot")


def load_splits(data_dir: str | None, full: bool, dtype: Any, train_size: int | None = None) -> MnistSplits:
    """The seed's splits (or ``--full``'s), with pixels scaled to [0, 1]; exits cleanly on data errors."""
    root = resolve_data_dir(data_dir)
    try:
        train_x, train_y = load_mnist(root, train=True)
        test_x, test_y = load_mnist(root, train=False)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    n_train, n_val, n_test = (55_000, 5_000, 10_000) if full else (8_000, 2_000, 1_000)
    if train_size is not None:
        if not 0 < train_size <= n_train:
            raise SystemExit(f"error: --train-size must be in 1..{n_train}, got {train_size}")
        n_train = train_size

    def split(images: np.ndarray, labels: np.ndarray, start: int, stop: int) -> Split:
        flat = images[start:stop].reshape(-1, 28 * 28).astype(dtype) / dtype(255.0)
        return Split(flat, labels[start:stop].astype(np.int64))

    val_start = 55_000 if full else 8_000
    return MnistSplits(
        train=split(train_x, train_y, 0, n_train),
        val=split(train_x, train_y, val_start, val_start + n_val),
        test=split(test_x, test_y, 0, n_test),
    )


def require_extra(module: str, purpose: str, flag: str) -> Any:
    """``module`` imported, or an exit that names the extra to install (or the flag to pass).

    The library needs only numpy and attrs; the scripts' progress bar and plot
    come from the light ``mnist`` extra, which ``make mnist`` installs.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SystemExit(
            f"error: {purpose} needs {module}, which is not installed. Install the examples' light "
            f"extra, `pip install -e '.[mnist]'` (as `make mnist` does), or pass {flag}"
        ) from None


def save_plot(path: str, train_losses: list[float], val_losses: list[float], val_accs: list[float]) -> None:
    """Train/validation loss and validation accuracy per epoch, as a PNG."""
    matplotlib = require_extra("matplotlib", "the loss plot", "--no-plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = list(range(1, len(train_losses) + 1))
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, train_losses, marker="o", label="train")
    ax_loss.plot(epochs, val_losses, marker="o", label="validation")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    ax_acc.plot(epochs, val_accs, marker="o", color="tab:green", label="validation")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    fig.suptitle("tapegrad MLP on MNIST")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
