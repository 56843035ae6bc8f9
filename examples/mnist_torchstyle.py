"""The seed article's MNIST loop, on tapegrad's PyTorch-style wrapper.

    python examples/mnist_torchstyle.py --data-dir ../shared/data
    python examples/mnist_torchstyle.py --data-dir ../shared/data --replay   # same numbers, faster

The model, the loop and the printed lines are the seed's, line for line; only
the imports, the command line, the (much faster) data loading and the loop
body's move into a function (which ``--replay`` traces once and replays)
differ. With the defaults it prints the article's numbers.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np

from tapegrad import retain_freed_memory
from tapegrad.backend import BACKEND_NAME, xp
from tapegrad.torchlike import Adam, CrossEntropyLoss, Linear, Module, ReLU, Tensor, replay

from mnist_common import add_common_arguments, load_splits, require_extra, save_plot


class MLP(Module):
    """
    3-layer MLP: 784 -> 128 -> 64 -> 10
    Activation: ReLU
    Loss: Cross-Entropy Loss
    Optimizer: Adam
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = Linear(784, 128)
        self.relu1 = ReLU()
        self.fc2 = Linear(128, 64)
        self.relu2 = ReLU()
        self.fc3 = Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x)
        x = self.relu1(x)
        x = self.fc2(x)
        x = self.relu2(x)
        x = self.fc3(x)
        return x


def main(argv: Sequence[str] | None = None) -> float:
    """Train as the seed does; returns the final test accuracy."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--replay", action="store_true",
                        help="trace the training step once and replay it (tapegrad.torchlike.replay)")
    args = parser.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else (20 if args.full else 10)
    print(f"Using backend: {BACKEND_NAME}")
    retain_freed_memory()  # each step reuses freed memory instead of faulting in new pages

    xp.random.seed(args.seed)
    # As in the seed: torchvision's images / 255.0 are float32; the weights are float64.
    data = load_splits(args.data_dir, args.full, np.float32, args.train_size)
    model = MLP()
    optimizer = Adam(model.parameters(), lr=args.lr)
    criterion = CrossEntropyLoss()
    train_images, train_labels = data.train.images, data.train.labels
    batch_size = args.batch_size
    epoch_train_losses: list[float] = []
    epoch_val_losses: list[float] = []
    epoch_val_accs: list[float] = []
    batch_losses: list[float] = []

    test_images_t = Tensor(data.test.images, requires_grad=False)
    test_labels_t = Tensor(data.test.labels, requires_grad=False)
    val_images_t = Tensor(data.val.images, requires_grad=False)
    val_labels_t = Tensor(data.val.labels, requires_grad=False)

    def train_step(images: Tensor, labels: Tensor) -> Tensor:
        optimizer.zero_grad()
        outputs = model(images)
        loss: Tensor = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        return loss

    if args.replay:  # as torch.compile would: traced once, then replayed, same numbers
        train_step = replay(train_step, model, optimizer)
    train_seconds = 0.0
    for epoch in range(epochs):
        epoch_batch_losses = []
        starts = range(0, len(train_images), batch_size)
        if not args.quiet:
            tqdm = require_extra("tqdm", "the progress bar", "--quiet").tqdm
            starts = tqdm(starts, desc=f"epoch {epoch + 1}/{epochs}", unit="step", leave=False)
        t0 = time.perf_counter()
        for i in starts:
            images = Tensor(train_images[i:i + batch_size], requires_grad=False)
            labels = Tensor(train_labels[i:i + batch_size], requires_grad=False)
            loss_value = train_step(images, labels).item()
            epoch_batch_losses.append(loss_value)
            batch_losses.append(loss_value)
        train_seconds += time.perf_counter() - t0

        avg_train_loss = float(np.mean(epoch_batch_losses))
        epoch_train_losses.append(avg_train_loss)

        val_outputs = model(val_images_t)
        val_loss = criterion(val_outputs, val_labels_t).item()
        epoch_val_losses.append(val_loss)

        val_preds = xp.argmax(val_outputs.data, axis=1)
        val_accuracy = float(xp.mean((val_preds == val_labels_t.data).astype(float)))
        epoch_val_accs.append(val_accuracy)

        print(f"Epoch {epoch+1}/{epochs}, Train Loss: {avg_train_loss:.4f}, "
              f"Val Loss: {val_loss:.4f}, Val Acc: {val_accuracy:.4f}", flush=True)

    print("Training complete")
    test_outputs = model(test_images_t)
    test_preds = xp.argmax(test_outputs.data, axis=1)
    test_accuracy = float(xp.mean((test_preds == test_labels_t.data).astype(float)))
    print(f"Final test accuracy: {test_accuracy:.4f}")
    steps = epochs * len(range(0, len(train_images), batch_size))
    print(f"Training time: {train_seconds:.2f} s for {steps} steps "
          f"({1e6 * train_seconds / max(steps, 1):.0f} µs per step)")
    if not args.no_plot:
        save_plot(args.plot, epoch_train_losses, epoch_val_losses, epoch_val_accs)
        print(f"Saved the loss and accuracy plot to {args.plot}")
    return test_accuracy


if __name__ == "__main__":
    main()
