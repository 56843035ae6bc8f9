"""A run killed with SIGKILL mid-epoch, then resumed, ends bit for bit as an uninterrupted run.

``examples/mnist.py`` saves its state after every epoch's "Epoch k/n" line.
To kill it mid-epoch every time, not whenever a timer happens to fire, the
killed run is the same script started through a small driver: it runs
``examples/mnist.py`` as ``__main__`` with the same arguments, with
`tapegrad.replay` wrapped to count the training steps (the script replays
its step). Halfway through epoch 2 the wrapper prints a marker and sleeps,
so the test kills a process that has saved epoch 1 and has taken half of
epoch 2's steps.
Nothing else about the run changes, and SIGKILL cannot be caught, so the
process gets no chance to tidy up.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import tapegrad as tg
from tapegrad import checkpoint, tree
from tapegrad.nn import MLP

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "mnist.py"
DATA = REPO.parent / "shared" / "data"
EPOCHS = 3
TRAIN_SIZE = 2000
STEPS_PER_EPOCH = math.ceil(TRAIN_SIZE / 32)  # the script's default batch size
KILL_AT_STEP = STEPS_PER_EPOCH + STEPS_PER_EPOCH // 2  # halfway through epoch 2
MARKER = "KILL-POINT"
TIMEOUT = 120

DRIVER = textwrap.dedent(
    f"""
    import os, runpy, sys, time
    import tapegrad as tg

    script, *args = sys.argv[1:]
    real_replay = tg.replay
    steps = 0

    def counting_replay(fn, **options):
        replayed = real_replay(fn, **options)

        def counted(*a, **k):
            global steps
            steps += 1
            if steps == {KILL_AT_STEP}:
                print("{MARKER}", flush=True)
                time.sleep(3600)  # until the test kills us
            return replayed(*a, **k)

        return counted

    tg.replay = counting_replay  # the script wraps its training step with tg.replay
    sys.path.insert(0, os.path.dirname(script))  # as `python examples/mnist.py` does
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
    """
)

pytestmark = pytest.mark.skipif(not (DATA / "MNIST").exists(), reason=f"MNIST is not at {DATA}")


def command(ckpt: Path, *extra: str) -> list[str]:
    return [
        "--data-dir", str(DATA), "--epochs", str(EPOCHS), "--train-size", str(TRAIN_SIZE),
        "--quiet", "--no-plot", "--checkpoint", str(ckpt), *extra,
    ]  # fmt: skip


def environment() -> dict[str, str]:
    # One BLAS thread: the comparison is bitwise, and OpenBLAS's threaded
    # kernels need not sum in the same order on every run. It is also kinder
    # to a small shared machine.
    one_thread = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return {**os.environ, "PYTHONUNBUFFERED": "1", **one_thread}


def run_script(ckpt: Path, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *command(ckpt, *extra)],
        cwd=REPO, env=environment(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def like(epochs_done: int) -> dict[str, Any]:
    """A state shaped as the script saves it after ``epochs_done`` epochs."""
    params = MLP((784, 128, 64, 10)).init(tg.random.key(0))
    history = {name: [0.0] * epochs_done for name in ("train_loss", "val_loss", "val_acc")}
    return {"params": params, "opt_state": tg.optim.adam(1e-3).init(params), "epoch": 0,
            "history": history}  # fmt: skip


def bits(state: dict[str, Any]) -> list[Any]:
    """Every leaf, arrays as (dtype, shape, bytes) and floats as hex, for a bitwise comparison."""
    out: list[Any] = []
    for leaf in tree.leaves(state):
        if isinstance(leaf, tg.Tensor):
            array = leaf.numpy()
            out.append((array.dtype.str, array.shape, array.tobytes()))
        elif isinstance(leaf, float):
            out.append(leaf.hex())
        else:
            out.append(leaf)
    return out


def kill_mid_epoch_2(ckpt: Path) -> str:
    """Run the script until halfway through epoch 2, SIGKILL it, and return what it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(SCRIPT), *command(ckpt)],
        cwd=REPO, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    watchdog = threading.Timer(TIMEOUT, proc.kill)  # ends the loop below if the marker never comes
    watchdog.start()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:  # the driver sleeps after the marker, so this stops at it
            lines.append(line)
            if line.strip() == MARKER:
                break
        assert lines and lines[-1].strip() == MARKER, "".join(lines) + proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return "".join(lines)


def test_resume_after_sigkill_mid_epoch_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = tmp_path / "straight.npz"
    run_script(straight)

    killed = tmp_path / "killed.npz"
    printed = kill_mid_epoch_2(killed)
    assert f"Epoch 1/{EPOCHS}" in printed and f"Epoch 2/{EPOCHS}" not in printed, printed
    # What the killed run left is epoch 1's checkpoint, whole, and nothing half-written beside it.
    assert checkpoint.load_metadata(killed)["epoch"] == 1
    after_kill = checkpoint.load(killed, like(1))
    assert after_kill["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.npz", "straight.npz"]

    resumed_out = run_script(killed, "--resume")
    assert f"Resuming from {killed} after epoch 1" in resumed_out
    assert f"Epoch 2/{EPOCHS}" in resumed_out and f"Epoch 1/{EPOCHS}" not in resumed_out

    want = checkpoint.load(straight, like(EPOCHS))
    got = checkpoint.load(killed, like(EPOCHS))
    assert got["epoch"] == want["epoch"] == EPOCHS
    assert bits(got["params"]) == bits(want["params"]), "final parameters differ"
    assert bits(got["opt_state"]) == bits(want["opt_state"]), "final optimizer state differs"
    assert bits(got["history"]) == bits(want["history"]), "loss and accuracy histories differ"
