"""Training throughput of every model in float32 and in bfloat16 autocast + channels-last,
side by side, and whether the data pipeline keeps up.

Usage: python benchmarks/bench_train.py [--data-dir D] [--steps 10] [--threads T]

For each distortion's input size and each model it times full training steps (forward,
backward, Adam step) on batches of 256, the two precisions taking turns step by step
(``--precision fp32`` against ``--precision bf16``, which also puts the model in
channels-last memory, as the engine does), and separately the time to draw and distort
one batch. It prints images/s of training in each precision, their ratio, the projected
fp32 epoch time for 60k images, and the data pipeline's share of an fp32 step (it runs in
the training process, so it adds to the step time).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from torchstn.experiments.data.mnist import DistortedMNIST
from torchstn.experiments.engine import count_parameters
from torchstn.experiments.engine.loop import autocast
from torchstn.experiments.models import build_model, list_models


def _median_time(fn, steps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _side_by_side(fns, steps: int) -> list[float]:
    """Median time of each function, the functions taking turns (same machine state)."""
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(steps):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--distortions", nargs="+", default=["r", "rts", "tc"])
    parser.add_argument("--models", nargs="+", default=list_models())
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = 256
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}, "
          f"median of {args.steps} steps\n")
    print("| distortion | model | params | fp32 img/s | bf16 + channels-last img/s | ratio | "
          "fp32 epoch (60k) s | data ms/batch | data % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for distortion in args.distortions:
        data = DistortedMNIST("mnist", distortion, data_dir=args.data_dir, train_size=batch * 8)
        batches = iter(data.train_batches(0, batch))
        data_t = _median_time(lambda: next(batches), min(args.steps, 6))
        x, y = next(data.train_batches(1, batch))
        for name in args.models:
            steps = []
            for precision in ("fp32", "bf16"):
                torch.manual_seed(0)
                model = build_model(name, data.size,
                                    st_downsample=distortion in ("rts", "tc"))
                if precision == "bf16":
                    model = model.to(memory_format=torch.channels_last)
                opt = torch.optim.Adam(model.parameters(), 1e-3)

                def step(model=model, opt=opt, precision=precision):
                    with autocast(precision, x.device):
                        loss = F.cross_entropy(model(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                steps.append(step)
            fp32_t, bf16_t = _side_by_side(steps, args.steps)
            epoch = (fp32_t + data_t) * 60000 / batch
            print(f"| {distortion} | {name} | {count_parameters(model):,} | "
                  f"{batch / fp32_t:,.0f} | {batch / bf16_t:,.0f} | {fp32_t / bf16_t:.2f}x | "
                  f"{epoch:.0f} | {1000 * data_t:.1f} | "
                  f"{100 * data_t / (fp32_t + data_t):.0f}% |", flush=True)


if __name__ == "__main__":
    main()
