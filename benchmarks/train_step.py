"""Time one training step of the seed's MLP under every system, interleaved.

    python benchmarks/train_step.py                 # 1 and 2 BLAS threads, batch 32 and 256, 3 runs each
    python benchmarks/train_step.py --threads 1 --batches 32 --rounds 5 --repeats 1

Systems: tapegrad's functional API and its PyTorch-style wrapper, each eager
and with the same step under `tg.replay` / `tl.replay` (the functional one
also with `donate_argnums`, as the wrapper's always donates), PyTorch eager (default Adam, and fused Adam) when torch is installed, and a
hand-written NumPy step. All start from the same weights, in float32, and
run in one process, alternating in short bursts (A/B/C/D, A/B/C/D, ...) so
that the machine's drift hits every system alike. The ratios are the result;
absolute times on a shared machine move by up to 2x, and one run's ratios by
several per cent, so each thread count runs ``--repeats`` times, each in a
fresh process, and the tables give the median and range of every ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _set_threads(n: int) -> None:
    # Must happen before NumPy (or torch) loads its BLAS.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def build_systems(batch: int, seed: int = 0) -> tuple[dict[str, Callable[[], float]], Any]:
    """One zero-argument step function per system, all from the same weights and batch."""
    import tapegrad as tg
    from tapegrad import torchlike as tl
    from tapegrad.nn import MLP, LinearParams

    sys.path[:0] = [str(HERE), str(HERE.parent / "examples")]
    from mnist import make_train_step
    from numpy_reference import SIZES, HandWrittenMLP

    weights, biases, x_np, y_np = make_inputs(batch, seed)
    systems: dict[str, Callable[[], float]] = {}

    # tapegrad, functional
    model = MLP(SIZES)
    params: Any = tuple(
        LinearParams(tg.tensor(w), tg.tensor(b)) if i % 2 == 0 else None
        for i, (w, b) in enumerate(_interleave(weights, biases))
    )
    opt = tg.optim.adam(1e-3)
    x, y = tg.tensor(x_np), tg.tensor(y_np)

    train_step = make_train_step(model, opt, replayed=False)  # examples/mnist.py's step

    def functional(step: Callable[..., tuple[Any, Any, tg.Tensor]]) -> Callable[[], float]:
        state: list[Any] = [params, opt.init(params)]

        def run() -> float:
            state[0], state[1], loss = step(state[0], state[1], x, y)
            return float(loss.item())

        return run

    systems["tapegrad"] = functional(train_step)
    # The same step traced once and replayed (tg.replay); then also donating the old
    # parameters and state, so that the replay may update them in place.
    systems["tapegrad_replay"] = functional(tg.replay(train_step))
    systems["tapegrad_replay_donated"] = functional(tg.replay(train_step, donate_argnums=(0, 1)))

    # tapegrad, PyTorch-style wrapper: the classic loop, and the same loop under tl.replay
    tx, ty = tl.Tensor(x_np), tl.Tensor(y_np)

    def torchlike(replayed: bool) -> Callable[[], float]:
        layers = [tl.Linear(i, o) for i, o in zip(SIZES[:-1], SIZES[1:])]
        for layer, w, b in zip(layers, weights, biases):
            layer.weight.data = w.copy()
            assert layer.bias is not None
            layer.bias.data = b.copy()
        net = tl.Sequential(layers[0], tl.ReLU(), layers[1], tl.ReLU(), layers[2])
        tl_opt = tl.Adam(net.parameters(), lr=1e-3)
        criterion = tl.CrossEntropyLoss()

        def step(x: tl.Tensor, y: tl.Tensor) -> tl.Tensor:
            tl_opt.zero_grad()
            loss: tl.Tensor = criterion(net(x), y)
            loss.backward()
            tl_opt.step()
            return loss

        run = tl.replay(step, net, tl_opt) if replayed else step
        return lambda: float(run(tx, ty).item())

    systems["torchlike"] = torchlike(replayed=False)
    systems["torchlike_replay"] = torchlike(replayed=True)

    # hand-written NumPy
    hand = HandWrittenMLP(weights, biases, batch)
    systems["numpy"] = lambda: hand.step(x_np, y_np)

    # PyTorch eager
    systems.update(torch_systems(weights, biases, x_np, y_np, "cpu"))
    return systems, (x_np, y_np)


def make_inputs(batch: int, seed: int = 0) -> tuple[list[Any], list[Any], Any, Any]:
    """The seed MLP's float32 weights (He-scaled), zero biases, and one random batch."""
    import numpy as np

    from numpy_reference import SIZES

    rng = np.random.default_rng(seed)
    weights = [(rng.standard_normal((i, o)) * np.sqrt(2 / i)).astype(np.float32)
               for i, o in zip(SIZES[:-1], SIZES[1:])]
    biases = [np.zeros(o, np.float32) for o in SIZES[1:]]
    x_np = rng.random((batch, SIZES[0]), dtype=np.float32)
    y_np = rng.integers(0, SIZES[-1], batch)
    return weights, biases, x_np, y_np


def torch_systems(weights: list[Any], biases: list[Any], x_np: Any, y_np: Any, device: str) -> dict[str, Callable[[], float]]:
    """PyTorch eager with default and fused Adam on ``device``; none if torch is missing."""
    systems = {}
    for name, fused in (("torch", False), ("torch_fused_adam", True)):
        model = torch_model(weights, biases, device, fused)
        if model is None:
            return {}
        torch, tnet, topt = model
        xt, yt = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
        systems[name] = torch_step(torch, tnet, topt, xt, yt)
    return systems


def torch_model(weights: list[Any], biases: list[Any], device: str, fused: bool = False) -> tuple[Any, Any, Any] | None:
    """``(torch, net, adam)``: the seed MLP in PyTorch from these weights; None without torch or the device."""
    torch: Any
    try:
        import torch
    except ImportError:
        return None
    if device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    elif not torch.cuda.is_available():
        return None
    tnet = torch.nn.Sequential(
        torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
        torch.nn.ReLU(), torch.nn.Linear(64, 10)).to(device)
    with torch.no_grad():
        linears: list[Any] = [tnet[0], tnet[2], tnet[4]]
        for lin, w, b in zip(linears, weights, biases):
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
    topt = torch.optim.Adam(tnet.parameters(), lr=1e-3, fused=fused or None)
    return torch, tnet, topt


def torch_step(torch: Any, net: Any, opt: Any, x: Any, y: Any) -> Callable[[], float]:
    """One eager PyTorch training step on this batch, as a zero-argument function returning the loss."""
    def step() -> float:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return float(loss.item())

    return step


def _interleave(weights: list[Any], biases: list[Any]) -> list[tuple[Any, Any]]:
    out: list[tuple[Any, Any]] = []
    for i, (w, b) in enumerate(zip(weights, biases)):
        if i:
            out.append((None, None))  # the ReLU between layers has no params
        out.append((w, b))
    return out


def time_systems(systems: dict[str, Callable[[], float]], rounds: int, burst: int) -> dict[str, float]:
    """Median µs per step of each system, alternating bursts of ``burst`` steps."""
    for step in systems.values():  # warm up: allocators, BLAS, caches
        for _ in range(20):
            step()
    samples: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(rounds):
        for name, step in systems.items():
            for _ in range(burst):
                t0 = time.perf_counter_ns()
                step()
                samples[name].append((time.perf_counter_ns() - t0) / 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}


def peak_step_memory(batch: int) -> dict[str, float]:
    """Peak traced bytes (tracemalloc) while one step runs, state included."""
    import tracemalloc

    out: dict[str, float] = {}
    for name in ("tapegrad", "tapegrad_replay", "tapegrad_replay_donated", "numpy"):
        tracemalloc.start()
        systems, _ = build_systems(batch)
        step = systems[name]
        for _ in range(3):
            step()
        del systems
        tracemalloc.reset_peak()
        step()
        out[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return out


def op_overhead(n: int = 10_000) -> dict[str, float]:
    """µs per op for ``n`` adds of 4-element float32 tensors, against NumPy."""
    import numpy as np

    import tapegrad as tg

    a_np = np.ones(4, np.float32)
    a = tg.tensor(a_np)

    def numpy_adds() -> None:
        y = a_np
        for _ in range(n):
            y = y + a_np

    def plain_adds() -> None:
        y = a
        for _ in range(n):
            y = y + a

    def recorded_adds() -> None:
        with tg.Tape():
            y = a
            for _ in range(n):
                y = y + a

    def recorded_and_backward() -> None:
        with tg.Tape() as tape:
            y = a
            for _ in range(n):
                y = y + a
            s = y.sum()
        tape.gradient(s, a)

    result = {}
    for name, fn in (("numpy_add", numpy_adds), ("tapegrad_add_no_tape", plain_adds),
                     ("tapegrad_add_recorded", recorded_adds),
                     ("tapegrad_add_recorded_plus_backward", recorded_and_backward)):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) / n * 1e6)
        result[name] = min(times)
    return result


def run_child(threads: int, batches: list[int], rounds: int, burst: int, keep_memory: bool) -> dict[str, Any]:
    """The measurements for one thread count (run in a fresh process)."""
    _set_threads(threads)
    import tapegrad as tg

    # Process-wide, so every system below gets the same allocator behaviour.
    retained = tg.retain_freed_memory() if keep_memory else False
    report: dict[str, Any] = {"threads": threads, "retain_freed_memory": retained, "batches": {}}
    for batch in batches:
        systems, _ = build_systems(batch)
        medians = time_systems(systems, rounds, burst)
        ratios = {f"{name}/numpy": medians[name] / medians["numpy"] for name in medians}
        if "torch" in medians:
            ratios.update({f"{name}/torch": medians[name] / medians["torch"] for name in medians})
        ratios["torchlike/tapegrad"] = medians["torchlike"] / medians["tapegrad"]
        # torchlike.replay donates the objects' old state, so it compares with the donating step.
        ratios["torchlike_replay/tapegrad_replay_donated"] = (
            medians["torchlike_replay"] / medians["tapegrad_replay_donated"]
        )
        report["batches"][str(batch)] = {"median_us": medians, "ratios": ratios}
    report["peak_step_bytes_batch32"] = peak_step_memory(32)
    report["op_overhead_us"] = op_overhead()
    return report


def combine(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from repeated runs: each median and ratio is the median over the runs.

    A ratio's lowest and highest values over the runs go in ``ratio_ranges``.
    """
    combined: dict[str, Any] = {key: reports[0][key] for key in ("threads", "retain_freed_memory")}
    combined["repeats"] = len(reports)
    combined["batches"] = {}
    for batch in reports[0]["batches"]:
        runs = [r["batches"][batch] for r in reports]
        combined["batches"][batch] = {
            "median_us": {k: statistics.median(run["median_us"][k] for run in runs) for k in runs[0]["median_us"]},
            "ratios": {k: statistics.median(run["ratios"][k] for run in runs) for k in runs[0]["ratios"]},
            "ratio_ranges": {k: (min(run["ratios"][k] for run in runs), max(run["ratios"][k] for run in runs))
                             for k in runs[0]["ratios"]},
        }
    for key in ("peak_step_bytes_batch32", "op_overhead_us"):
        combined[key] = {k: statistics.median(r[key][k] for r in reports) for k in reports[0][key]}
    return combined


def print_report(report: dict[str, Any]) -> None:
    """The tables, as Markdown."""
    malloc = "freed memory retained" if report["retain_freed_memory"] else "default malloc"
    repeats = report.get("repeats", 1)
    runs = f", median of {repeats} runs (lowest-highest ratio in brackets)" if repeats > 1 else ""
    print(f"\n### {report['threads']} BLAS thread(s), {malloc}{runs}\n")
    for batch, r in report["batches"].items():
        med, ratios, ranges = r["median_us"], r["ratios"], r.get("ratio_ranges")

        def shown(key: str) -> str:
            if ranges is None or repeats == 1:
                return f"{ratios[key]:.2f}"
            low, high = ranges[key]
            return f"{ratios[key]:.2f} ({low:.2f}-{high:.2f})"

        print(f"batch {batch}: median µs per training step (ratio to hand-written NumPy; to PyTorch eager)")
        print("| system | µs/step | ×numpy | ×torch |\n| --- | ---: | ---: | ---: |")
        for name, us in med.items():
            vs_torch = shown(name + "/torch") if name + "/torch" in ratios else "-"
            print(f"| {name} | {us:,.0f} | {shown(name + '/numpy')} | {vs_torch} |")
        print(f"\nwrapper / functional: {shown('torchlike/tapegrad')} eager, "
              f"{shown('torchlike_replay/tapegrad_replay_donated')} replayed\n")
    mem = report["peak_step_bytes_batch32"]
    print("peak traced memory of one step (batch 32): "
          + ", ".join(f"{name} {mem[name] / 1e6:.2f} MB ({mem[name] / mem['numpy']:.2f}x numpy)"
                      for name in mem))
    oh = report["op_overhead_us"]
    print("per-op cost of 10,000 adds of 4-element tensors (µs/op): "
          + ", ".join(f"{k} {v:.2f}" for k, v in oh.items()))


def main() -> None:
    """Run one child process per thread count; print and save the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="runs per thread count, each in a fresh process")
    parser.add_argument("--json", default=str(HERE / "results" / "train_step.json"))
    parser.add_argument("--default-malloc", action="store_true",
                        help="do not call tapegrad.retain_freed_memory() (measures the page-fault cost)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        report = run_child(args.threads[0], args.batches, args.rounds, args.burst, not args.default_malloc)
        print(json.dumps(report))
        return
    reports = []
    for threads in args.threads:
        cmd = [sys.executable, __file__, "--child", "--threads", str(threads), "--batches",
               *map(str, args.batches), "--rounds", str(args.rounds), "--burst", str(args.burst),
               *(["--default-malloc"] if args.default_malloc else [])]
        # Each run in a fresh process: a run's ratios move by several per cent with the
        # machine, so a verdict is the median over runs, with the spread beside it.
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        report = combine(runs)
        report["runs"] = runs
        print_report(report)
        reports.append(report)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(reports, indent=2))
    print(f"\nsaved {args.json}")


if __name__ == "__main__":
    main()
