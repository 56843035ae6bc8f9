"""Time a whole default run of examples/mnist.py against the same run hand-written and in PyTorch.

    python benchmarks/whole_run.py --data-dir ../shared/data             # 3 runs, default BLAS threads
    python benchmarks/whole_run.py --data-dir ../shared/data --threads 1 --runs 5

Every system trains the seed's MLP on the seed's 8,000 training images for 10
epochs of 250 steps (batch 32, float32, Adam at 1e-3), from the same initial
weights (the example's, for ``--seed``), and reads each step's loss as a
Python number, as the example does:

- ``tapegrad``: the example's own step and epoch loop (`make_train_step`,
  `train_epoch`), replayed with donation, as ``python examples/mnist.py`` runs;
- ``tapegrad_eager``: the same with ``--no-replay``;
- ``numpy``: the hand-written step of `numpy_reference.py`;
- ``torch``: PyTorch eager with its default Adam, when torch is installed.

The systems take turns epoch by epoch, and who goes first rotates, so the
machine's drift hits each alike. A system's training time is the sum of its
epochs, timed like the example's "Training time" line. The step benchmark
(`train_step.py`) reports medians; this one reports whole runs, slow steps
included, which is what a user waits for.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "examples")]

EpochRunner = Callable[[], Any]  # trains one epoch; returns that epoch's losses


def epoch_runners(data: Any, seed: int, steps: int | None = None) -> dict[str, EpochRunner]:
    """Each system's one-epoch training function, all from the same weights over the same batches.

    ``steps`` shortens an epoch to its first ``steps`` batches (for tests).
    """
    import numpy as np

    import mnist
    import tapegrad as tg
    from mnist_common import Split
    from numpy_reference import HandWrittenMLP
    from train_step import torch_model, torch_step

    batch_size = 32
    n = len(data.train.labels) // batch_size if steps is None else steps
    images, labels = data.train.images[: n * batch_size], data.train.labels[: n * batch_size]
    model = tg.nn.MLP(mnist.SIZES)
    params, _ = mnist.initial_params(model, seed)
    opt = tg.optim.adam(1e-3)
    layers = [p for p in params if p is not None]
    weights = [np.array(p.weight.data) for p in layers]
    biases = [np.array(p.bias.data) for p in layers]
    runners: dict[str, EpochRunner] = {}

    def functional(replayed: bool) -> EpochRunner:
        train_step = mnist.make_train_step(model, opt, replayed=replayed)
        state = [params, opt.init(params)]
        epoch_batches = list(mnist.batches(Split(images, labels), batch_size, "cpu"))

        def run() -> Any:
            losses = np.empty(n)
            state[0], state[1] = mnist.train_epoch(train_step, state[0], state[1], epoch_batches, losses)
            return losses

        return run

    runners["tapegrad"] = functional(replayed=True)
    runners["tapegrad_eager"] = functional(replayed=False)

    hand = HandWrittenMLP(weights, biases, batch_size)
    pairs = [(images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, n * batch_size, batch_size)]

    def hand_epoch() -> Any:
        losses = np.empty(n)
        for i, (x, y) in enumerate(pairs):
            losses[i] = hand.step(x, y)
        return losses

    runners["numpy"] = hand_epoch

    torch_parts = torch_model(weights, biases, "cpu")
    if torch_parts is not None:
        torch, net, topt = torch_parts
        torch_steps = [torch_step(torch, net, topt, torch.from_numpy(x), torch.from_numpy(y)) for x, y in pairs]

        def torch_epoch() -> Any:
            losses = np.empty(n)
            for i, step in enumerate(torch_steps):
                losses[i] = step()
            return losses

        runners["torch"] = torch_epoch
    return runners


def time_run(runners: dict[str, EpochRunner], epochs: int) -> dict[str, Any]:
    """Seconds of training per system for ``epochs`` epochs, taking turns, and each one's last losses."""
    names = list(runners)
    seconds = dict.fromkeys(names, 0.0)
    last: dict[str, Any] = {}
    for epoch in range(epochs):
        shift = epoch % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            last[name] = runners[name]()
            seconds[name] += time.perf_counter() - t0
    return {"seconds": seconds, "last_epoch_loss": {name: float(v.mean()) for name, v in last.items()}}


def main() -> None:
    """Time ``--runs`` whole runs of every system; print the table and save it as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="where MNIST lives (as for examples/mnist.py)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads (default: as the example runs)")
    parser.add_argument("--json", default=str(HERE / "results" / "whole_run.json"))
    args = parser.parse_args()
    if args.threads is not None:  # before NumPy loads its BLAS
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    import numpy as np

    import tapegrad as tg
    from mnist_common import load_splits

    tg.retain_freed_memory()  # as the example does
    data = load_splits(args.data_dir, False, np.float32)
    runs = [time_run(epoch_runners(data, args.seed), args.epochs) for _ in range(args.runs)]
    names = list(runs[0]["seconds"])
    steps = args.epochs * (len(data.train.labels) // 32)
    print(f"\nwhole default run ({args.epochs} epochs, {steps} steps of batch 32), "
          f"{args.runs} runs, BLAS threads: {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}")
    print("| system | training s, each run | median s | µs/step | ×numpy | last epoch's loss |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    medians = {name: statistics.median(r["seconds"][name] for r in runs) for name in names}
    for name in names:
        each = ", ".join(f"{r['seconds'][name]:.2f}" for r in runs)
        ratios = [r["seconds"][name] / r["seconds"]["numpy"] for r in runs]
        print(f"| {name} | {each} | {medians[name]:.2f} | {1e6 * medians[name] / steps:,.0f} | "
              f"{statistics.median(ratios):.2f} | {runs[-1]['last_epoch_loss'][name]:.4f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"steps": steps, "runs": runs}, indent=2))
    print(f"\nsaved {args.json}")


if __name__ == "__main__":
    main()
