"""Train the seed article's MLP on MNIST with tapegrad's functional API.

    python examples/mnist.py --data-dir ../shared/data          # the seed's recipe
    python examples/mnist.py --data-dir ../shared/data --full   # 55k images, cosine decay

Each step is pure: a tape records the forward pass, ``tape.gradient`` returns
gradients shaped like the parameters, and ``opt.update`` returns new
parameters and optimizer state.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import tapegrad as tg
from tapegrad import checkpoint
from tapegrad.nn import MLP, cross_entropy

from mnist_common import MnistSplits, Split, add_common_arguments, load_splits, require_extra, save_plot

SIZES = (784, 128, 64, 10)
EVAL_BATCH = 1000


@attrs.frozen
class Evaluation:
    """Mean loss and accuracy over a split."""

    loss: float
    accuracy: float


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--no-replay", action="store_true",
                        help="run every step eagerly instead of replaying the recorded first one")
    parser.add_argument("--checkpoint", default=None, help="save the training state here after every epoch")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    parser.add_argument("--stop-after-epoch", type=int, default=None,
                        help="stop after this epoch, as an interruption would (for resume tests)")
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 20 if args.full else 10
    if args.resume and not args.checkpoint:
        parser.error("--resume needs --checkpoint PATH")
    return args


def batches(split: Split, batch_size: int, device: str, order: np.ndarray | None = None) -> Iterator[tuple[tg.Tensor, tg.Tensor]]:
    """Mini-batches as tensors, in ``order`` if given (else in file order, as the seed)."""
    images, labels = split.images, split.labels
    if order is not None:
        images, labels = images[order], labels[order]
    for start in range(0, len(labels), batch_size):
        yield (
            tg.tensor(images[start:start + batch_size], device=device),
            tg.tensor(labels[start:start + batch_size], device=device),
        )


def evaluate(model: Any, params: Any, split: Split, device: str) -> Evaluation:
    """Loss and accuracy in batches, with no tape: nothing is recorded."""
    total_loss = 0.0
    correct = 0
    for x, y in batches(split, EVAL_BATCH, device):
        logits = model.apply(params, x)
        total_loss += cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(axis=1) == y).sum().item())
    n = len(split.labels)
    return Evaluation(total_loss / n, correct / n)


def make_optimizer(args: argparse.Namespace, steps_per_epoch: int) -> tg.optim.Optimizer:
    """Adam; with ``--full``, its learning rate follows a cosine decay over the run."""
    if args.full:
        return tg.optim.adam(tg.optim.cosine_decay_schedule(args.lr, args.epochs * steps_per_epoch))
    return tg.optim.adam(args.lr)


TrainStep = Callable[[Any, Any, tg.Tensor, tg.Tensor], tuple[Any, Any, tg.Tensor]]


def initial_params(model: tg.nn.Sequential, seed: int, device: str = "cpu") -> tuple[Any, tg.random.Key]:
    """The model's initial parameters for ``seed``, on ``device``, and the key that shuffles epochs."""
    init_key, shuffle_key = tg.random.split(tg.random.key(seed))
    return tg.tree.map(lambda p: p.to(device), model.init(init_key)), shuffle_key


def make_train_step(model: tg.nn.Sequential, opt: tg.optim.Optimizer, replayed: bool = True) -> TrainStep:
    """One pure training step: ``(params, opt_state, x, y) -> (params, opt_state, loss)``.

    With ``replayed``, the step is traced once and replayed (see `tg.replay`). The
    training loop drops the old parameters and state, so it donates them: the
    replay updates them in place.
    """

    def step(params: Any, opt_state: Any, x: tg.Tensor, y: tg.Tensor) -> tuple[Any, Any, tg.Tensor]:
        with tg.Tape() as tape:
            loss = cross_entropy(model.apply(params, x), y)
        grads = tape.gradient(loss, params)
        params, opt_state = opt.update(grads, opt_state, params)
        return params, opt_state, loss

    return tg.replay(step, donate_argnums=(0, 1)) if replayed else step


def train_epoch(train_step: TrainStep, params: Any, opt_state: Any, epoch_batches: Sequence[tuple[tg.Tensor, tg.Tensor]],
                losses: np.ndarray, progress: Any = None) -> tuple[Any, Any]:
    """One pass over ``epoch_batches``; each step's loss goes into ``losses``. The timed loop."""
    for i, (x, y) in enumerate(epoch_batches):
        params, opt_state, loss = train_step(params, opt_state, x, y)
        losses[i] = loss.item()
        if progress is not None:
            progress.update(1)
            if i % 25 == 0:
                progress.set_postfix(loss=f"{losses[: i + 1].mean():.4f}", refresh=False)
    return params, opt_state


def train(args: argparse.Namespace, data: MnistSplits) -> dict[str, Any]:
    """The training loop; returns the final parameters, history and timings."""
    model = MLP(SIZES, dtype=args.dtype)
    params, shuffle_key = initial_params(model, args.seed, args.device)
    steps_per_epoch = -(-len(data.train.labels) // args.batch_size)
    opt = make_optimizer(args, steps_per_epoch)
    opt_state = opt.init(params)
    epoch_keys = tg.random.split(shuffle_key, args.epochs)
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_acc": []}
    start_epoch = 0
    meta = {"sizes": ",".join(map(str, SIZES)), "dtype": args.dtype, "seed": args.seed, "full": args.full,
            "train_size": args.train_size, "batch_size": args.batch_size, "lr": args.lr}

    if args.resume and Path(args.checkpoint).exists():
        params, opt_state, start_epoch, history = resume(args.checkpoint, meta, params, opt_state)
        print(f"Resuming from {args.checkpoint} after epoch {start_epoch}")

    train_step = make_train_step(model, opt, replayed=not args.no_replay)
    train_seconds = 0.0
    steps = 0
    for epoch in range(start_epoch, args.epochs):
        order = tg.random.permutation(epoch_keys[epoch], len(data.train.labels)) if args.full else None
        epoch_batches = list(batches(data.train, args.batch_size, args.device, order))
        losses = np.empty(len(epoch_batches))
        progress = _progress(epoch, args, len(epoch_batches))
        t0 = time.perf_counter()
        params, opt_state = train_epoch(train_step, params, opt_state, epoch_batches, losses, progress)
        train_seconds += time.perf_counter() - t0
        steps += len(epoch_batches)
        if progress is not None:
            progress.close()
        val = evaluate(model, params, data.val, args.device)
        history["train_loss"].append(float(losses.mean()))
        history["val_loss"].append(val.loss)
        history["val_acc"].append(val.accuracy)
        print(f"Epoch {epoch + 1}/{args.epochs}, Train Loss: {losses.mean():.4f}, "
              f"Val Loss: {val.loss:.4f}, Val Acc: {val.accuracy:.4f}", flush=True)
        if args.checkpoint:
            state = {"params": params, "opt_state": opt_state, "epoch": epoch + 1, "history": history}
            checkpoint.save(args.checkpoint, state, {**meta, "epoch": epoch + 1})
        if args.stop_after_epoch is not None and epoch + 1 >= args.stop_after_epoch:
            print(f"Stopping after epoch {epoch + 1} (--stop-after-epoch)")
            break
    return {"params": params, "history": history, "train_seconds": train_seconds, "steps": steps,
            "model": model}


# The settings a resumed run must share with the run that wrote the checkpoint: anything
# else would silently continue a different run (other data, order, or step size).
RESUMED_SETTINGS = (
    ("sizes", "layer sizes"), ("dtype", "--dtype"), ("seed", "--seed"), ("full", "--full"),
    ("train_size", "--train-size"), ("batch_size", "--batch-size"), ("lr", "--lr"),
)


def _shown(value: Any) -> str:
    """A setting as the error message shows it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "unset" if value is None else str(value)


def resume(path: str, meta: dict[str, Any], params: Any, opt_state: Any) -> tuple[Any, Any, int, dict[str, list[float]]]:
    """The state saved at ``path``; exits with a message if it is from another run's setup.

    The metadata is read first: it says how many epochs the history holds (so
    that ``like`` has its shape), and the settings of the run that wrote it
    (`RESUMED_SETTINGS`). Only ``--epochs`` may differ, to train on for longer.
    """
    try:
        saved_meta = checkpoint.load_metadata(path)
        for key, option in RESUMED_SETTINGS:
            # A checkpoint from before a setting was recorded cannot be checked for it.
            if key in saved_meta and saved_meta[key] != meta[key]:
                print(f"error: cannot resume: {path} was written by a run with {option} "
                      f"{_shown(saved_meta[key])}, but this run has {option} {_shown(meta[key])}; resume "
                      f"with the same setting, or start afresh without --resume", file=sys.stderr)
                raise SystemExit(2)
        done = saved_meta.get("epoch", 0)
        done = done if isinstance(done, int) and not isinstance(done, bool) and done >= 0 else 0
        history = {name: [0.0] * done for name in ("train_loss", "val_loss", "val_acc")}
        like = {"params": params, "opt_state": opt_state, "epoch": 0, "history": history}
        saved = checkpoint.load(path, like)
    except checkpoint.CheckpointError as exc:
        print(f"error: cannot resume: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return saved["params"], saved["opt_state"], saved["epoch"], saved["history"]


def _progress(epoch: int, args: argparse.Namespace, total: int) -> Any:
    if args.quiet:
        return None
    tqdm = require_extra("tqdm", "the progress bar", "--quiet").tqdm
    return tqdm(total=total, desc=f"epoch {epoch + 1}/{args.epochs}", unit="step", leave=False,
                mininterval=0.2)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse arguments, load MNIST, train, evaluate on the test split, plot."""
    args = parse_args(argv)
    if args.device == "cuda" and not tg.cuda_available():
        raise SystemExit("error: --device cuda needs CuPy and a CUDA GPU; none was found")
    tg.retain_freed_memory()  # each step reuses freed memory instead of faulting in new pages
    t0 = time.perf_counter()
    data = load_splits(args.data_dir, args.full, np.dtype(args.dtype).type, args.train_size)
    print(f"Loaded MNIST in {time.perf_counter() - t0:.2f} s: {len(data.train.labels)} train, "
          f"{len(data.val.labels)} validation, {len(data.test.labels)} test images")
    result = train(args, data)
    test = evaluate(result["model"], result["params"], data.test, args.device)
    print("Training complete")
    print(f"Final test accuracy: {test.accuracy:.4f}")
    if result["steps"]:
        per_step = 1e6 * result["train_seconds"] / result["steps"]
        print(f"Training time: {result['train_seconds']:.2f} s for {result['steps']} steps "
              f"({per_step:.0f} µs per step)")
    history = result["history"]
    if not args.no_plot and history["train_loss"]:
        save_plot(args.plot, history["train_loss"], history["val_loss"], history["val_acc"])
        print(f"Saved the loss and accuracy plot to {args.plot}")
    result["test_accuracy"] = test.accuracy
    return result


if __name__ == "__main__":
    main()
