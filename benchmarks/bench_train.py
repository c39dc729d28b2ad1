"""Training throughput of every model in float32 and in bfloat16 autocast + channels-last,
side by side, and whether the data pipeline keeps up.

Usage: python benchmarks/bench_train.py [--suite table1|house] [--data-dir D] [--steps 10]
[--threads T]

``--suite house`` times the house-number models (Table 2) at both crop sizes on batches of
128, in fp32, fp32 + channels-last and bf16 + channels-last, with ST-CNN Single and Multi
also sampling a smaller first output (``st_size``). Every table is headed by the CPU's
model and its bfloat16-related flags: bf16 is native only with AVX-512 BF16 or AMX.

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
from torchstn.experiments.engine.loop import autocast, cpu_line
from torchstn.experiments.models import build_house_model, build_model, list_models


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


#: (crop px, model, st_size) cells of the house-number suite.
HOUSE_CELLS = [(64, "cnn", None), (64, "st-cnn-single", None), (64, "st-cnn-multi", None),
               (128, "cnn", None), (128, "st-cnn-single", None), (128, "st-cnn-single", 54),
               (128, "st-cnn-multi", None), (128, "st-cnn-multi", 54)]


def house_suite(args) -> None:
    """The house-number models: numbers/s in three precisions, and the data's share."""
    from torchstn.experiments.data.house_numbers import HouseNumbers
    from torchstn.experiments.tasks.house_numbers import _crop_of, sequence_loss

    batch = 128
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}, "
          f"width {args.width:g}, median of {args.steps} steps\n{cpu_line()}\n")
    print("| size | model | st_size | params | fp32 num/s | fp32 + CL num/s | "
          "bf16 + CL num/s | data ms/batch | fp32 epoch (50k) s |")
    print("|---|---|---|---|---|---|---|---|---|")
    cache = {}
    for size, name, st_size in HOUSE_CELLS:
        if args.models and name not in args.models:
            continue
        variant = "tight" if size == 64 else "loose"
        crop = _crop_of(size)
        if variant not in cache:
            data = HouseNumbers(variant, data_dir=args.data_dir, train_size=batch * 8,
                                test_size=batch)
            batches = iter(data.train_batches(0, batch, crop=crop))
            data_t = _median_time(lambda: next(batches), min(args.steps, 6))
            cache[variant] = (next(data.train_batches(1, batch, crop=crop)), data_t)
        (x, y), data_t = cache[variant]
        steps = []
        for precision, cl in (("fp32", False), ("fp32", True), ("bf16", True)):
            torch.manual_seed(0)
            model = build_house_model(name, crop, in_channels=1, width=args.width,
                                      dropout=0.0, st_size=st_size)
            if cl:
                model = model.to(memory_format=torch.channels_last)
            opt = torch.optim.Adam(model.parameters(), 1e-3)
            xin = x.contiguous(memory_format=torch.channels_last) if cl else x

            def step(model=model, opt=opt, precision=precision, xin=xin):
                with autocast(precision, xin.device):
                    loss = sequence_loss(model(xin), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            steps.append(step)
        times = _side_by_side(steps, args.steps)
        rates = " | ".join(f"{batch / t:,.0f}" for t in times)
        print(f"| {size} | {name} | {st_size or '-'} | {count_parameters(model):,} | {rates} | "
              f"{1000 * data_t:.1f} | {(times[0] + data_t) * 50000 / batch:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=["table1", "house"], default="table1")
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--distortions", nargs="+", default=["r", "rts", "tc"])
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--width", type=float, default=0.25, help="house suite: model width")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.suite == "house":
        house_suite(args)
        return
    args.models = args.models or list_models()
    batch = 256
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}, "
          f"median of {args.steps} steps\n{cpu_line()}\n")
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
