"""The seed article's MNIST script runs on tapegrad and prints the article's numbers.

`tests/seed/seed_mnist.py` is the article's script with only its four
``deeplygrad`` imports changed. Run as the article ran it (from a directory
holding ``./data``), and as `examples/mnist_torchstyle.py`, every epoch's
train loss, validation loss and validation accuracy, and the final test
accuracy, must be within 0.003 of what the article printed.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTICLE = REPO.parent / "shared" / "seed" / "000_060bd1e53c7aa4d2.txt"
DATA = REPO.parent / "shared" / "data"
SEED_SCRIPT = REPO / "tests" / "seed" / "seed_mnist.py"
TORCHSTYLE = REPO / "examples" / "mnist_torchstyle.py"

TOLERANCE = 0.003

#: What the article printed: (train loss, validation loss, validation accuracy) per epoch.
ARTICLE_EPOCHS = [
    (0.5647, 0.3684, 0.8905),
    (0.2366, 0.2881, 0.9195),
    (0.1548, 0.2600, 0.9255),
    (0.1068, 0.2427, 0.9295),
    (0.0765, 0.2300, 0.9320),
    (0.0550, 0.2367, 0.9330),
    (0.0407, 0.2363, 0.9360),
    (0.0318, 0.2362, 0.9400),
    (0.0254, 0.2752, 0.9335),
    (0.0212, 0.2694, 0.9340),
]
ARTICLE_TEST_ACCURACY = 0.9360

EPOCH_LINE = re.compile(
    r"^Epoch (\d+)/(\d+), Train Loss: (\d+\.\d{4}), Val Loss: (\d+\.\d{4}), Val Acc: (\d\.\d{4})$", re.M
)
TEST_LINE = re.compile(r"^Final test accuracy: (\d\.\d{4})$", re.M)

#: The only lines the copy may change: the article's imports, then tapegrad's.
ARTICLE_IMPORTS = [
    "from deeplygrad.nn import Module, Linear, ReLU, CrossEntropyLoss",
    "from deeplygrad.optim import Adam",
    "from deeplygrad.backend import xp, BACKEND_NAME",
    "from deeplygrad.tensor import Tensor",
]
TAPEGRAD_IMPORTS = [
    "from tapegrad.torchlike import Module, Linear, ReLU, CrossEntropyLoss",
    "from tapegrad.torchlike import Adam",
    "from tapegrad.backend import xp, BACKEND_NAME",
    "from tapegrad.torchlike import Tensor",
]


def article_script() -> list[str]:
    """The article's MNIST script: from its docstring's opening quotes to the final ``main()``."""
    lines = ARTICLE.read_text(encoding="utf-8").splitlines()
    start = next(
        i for i in range(len(lines) - 1)
        if lines[i] == '"""' and lines[i + 1].startswith("deeplygrad.neural_network.mnist.py")
    )
    stop = next(i for i in range(start, len(lines)) if lines[i] == "main()")
    return lines[start : stop + 1]


def parse_epochs(output: str) -> list[tuple[float, float, float]]:
    """Every epoch line's (train loss, val loss, val acc), checking the epoch counter."""
    found = EPOCH_LINE.findall(output)
    assert [(int(e), int(n)) for e, n, *_ in found] == [(i, 10) for i in range(1, 11)], output
    return [(float(t), float(v), float(a)) for _, _, t, v, a in found]


def parse_test_accuracy(output: str) -> float:
    """The final test accuracy line's value."""
    match = TEST_LINE.search(output)
    assert match is not None, output
    return float(match.group(1))


def assert_reproduces_the_article(output: str) -> None:
    epochs = parse_epochs(output)
    for i, (got, want) in enumerate(zip(epochs, ARTICLE_EPOCHS), start=1):
        for name, g, w in zip(("train loss", "val loss", "val acc"), got, want):
            assert abs(g - w) <= TOLERANCE, f"epoch {i} {name}: got {g}, the article printed {w}"
    accuracy = parse_test_accuracy(output)
    assert abs(accuracy - ARTICLE_TEST_ACCURACY) <= TOLERANCE, accuracy


def run(args: list[str], cwd: Path) -> str:
    """Run a Python script to completion; its stdout, after checking it exited cleanly."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stdout


# ---- the copy is the article's script ------------------------------------------------------------


def test_the_copy_differs_from_the_article_only_in_its_four_imports() -> None:
    article = article_script()
    copy = SEED_SCRIPT.read_text(encoding="utf-8").splitlines()
    assert article[1].startswith("deeplygrad.neural_network.mnist.py : Train a MLP on MNIST")
    assert len(article) == len(copy) == 112
    removed, added = [], []
    for line in difflib.unified_diff(article, copy, lineterm="", n=0):
        if line.startswith("-") and not line.startswith("---"):
            removed.append(line[1:])
        elif line.startswith("+") and not line.startswith("+++"):
            added.append(line[1:])
    assert removed == ARTICLE_IMPORTS
    assert added == TAPEGRAD_IMPORTS
    # ... and in the same places: line for line, everything else is equal.
    changed = [i for i, (a, c) in enumerate(zip(article, copy)) if a != c]
    assert [article[i] for i in changed] == ARTICLE_IMPORTS


def test_the_parsers_read_the_articles_own_output() -> None:
    # The article's printed output, after its final `main()`, parses to the expected table.
    text = ARTICLE.read_text(encoding="utf-8")
    printed = text[text.index("Using backend: numpy") :]
    assert parse_epochs(printed) == ARTICLE_EPOCHS
    assert parse_test_accuracy(printed) == ARTICLE_TEST_ACCURACY


# ---- the full runs ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_seed_script_reproduces_the_articles_numbers(tmp_path: Path) -> None:
    (tmp_path / "data").symlink_to(DATA, target_is_directory=True)
    output = run([str(SEED_SCRIPT)], cwd=tmp_path)
    assert output.startswith("Using backend: numpy\n")
    assert "Training complete" in output
    assert_reproduces_the_article(output)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--replay"]], ids=["eager", "replayed"])
def test_torchstyle_example_reproduces_the_articles_numbers(tmp_path: Path, extra: list[str]) -> None:
    output = run([str(TORCHSTYLE), "--data-dir", str(DATA), "--quiet", "--no-plot", *extra], cwd=tmp_path)
    assert_reproduces_the_article(output)
    assert list(tmp_path.iterdir()) == []  # --no-plot wrote nothing
