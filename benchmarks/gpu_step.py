"""The seed MLP's training step on a GPU: tapegrad on CuPy against PyTorch CUDA and hand-written CuPy.

    python benchmarks/gpu_step.py                    # batch 32 and 4096
    python benchmarks/gpu_step.py --batches 4096 --rounds 20

Every step ends with ``float(loss.item())``, which waits for the GPU, so a
step's time is its whole latency. `tg.replay` replays host NumPy calls only,
so on CuPy tapegrad runs eagerly. Systems alternate in bursts, as in
`train_step.py`, and the ratios are the result. Needs CuPy and a CUDA GPU
(``pip install 'tapegrad[gpu]'``); PyTorch is optional.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from numpy_reference import SIZES, HandWrittenMLP  # noqa: E402
from train_step import make_inputs, time_systems, torch_systems  # noqa: E402


def build_gpu_systems(batch: int, seed: int = 0) -> dict[str, Callable[[], float]]:
    """One zero-argument step per system, on the GPU, all from the same weights and batch."""
    import cupy as cp

    import tapegrad as tg
    from tapegrad.nn import MLP, LinearParams, cross_entropy

    weights, biases, x_np, y_np = make_inputs(batch, seed)
    systems: dict[str, Callable[[], float]] = {}

    model = MLP(SIZES)
    params: Any = (
        LinearParams(tg.tensor(weights[0], device="cuda"), tg.tensor(biases[0], device="cuda")), None,
        LinearParams(tg.tensor(weights[1], device="cuda"), tg.tensor(biases[1], device="cuda")), None,
        LinearParams(tg.tensor(weights[2], device="cuda"), tg.tensor(biases[2], device="cuda")),
    )
    opt = tg.optim.adam(1e-3)
    state: list[Any] = [params, opt.init(params)]
    x, y = tg.tensor(x_np, device="cuda"), tg.tensor(y_np, device="cuda")

    def tapegrad_step() -> float:
        with tg.Tape() as tape:
            loss = cross_entropy(model.apply(state[0], x), y)
        grads = tape.gradient(loss, state[0])
        state[0], state[1] = opt.update(grads, state[1], state[0])
        return float(loss.item())

    systems["tapegrad"] = tapegrad_step

    hand = HandWrittenMLP([cp.asarray(w) for w in weights], [cp.asarray(b) for b in biases], batch, xp=cp)
    x_cp, y_cp = cp.asarray(x_np), cp.asarray(y_np)
    systems["cupy"] = lambda: hand.step(x_cp, y_cp)

    systems.update(torch_systems(weights, biases, x_np, y_np, "cuda"))
    return systems


def main() -> None:
    """Time every system at each batch size; print the table and save it as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 4096])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--json", default=str(HERE / "results" / "gpu_step.json"))
    args = parser.parse_args()
    import tapegrad as tg

    if not tg.cuda_available():
        raise SystemExit("error: this benchmark needs CuPy and a CUDA GPU; none was found")
    report: dict[str, Any] = {}
    for batch in args.batches:
        medians = time_systems(build_gpu_systems(batch), args.rounds, args.burst)
        base = "torch" if "torch" in medians else "cupy"
        print(f"\nbatch {batch}: median µs per training step on the GPU")
        print(f"| system | µs/step | ×cupy | ×{base} |\n| --- | ---: | ---: | ---: |")
        for name, us in medians.items():
            print(f"| {name} | {us:,.0f} | {us / medians['cupy']:.2f} | {us / medians[base]:.2f} |")
        report[str(batch)] = medians
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"\nsaved {args.json}")


if __name__ == "__main__":
    main()
