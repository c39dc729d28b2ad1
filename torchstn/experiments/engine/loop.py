"""The training engine: one loop for every task, on one process or many (torchrun).

The engine knows nothing of datasets, losses or how many transformers a model holds: the
task (:class:`~torchstn.experiments.tasks.Task`) makes the batches, the loss, the metric
sums and the figures. The engine seeds, builds the optimizer, schedules the rate, steps,
reduces the sums over ranks, evaluates, and writes the run folder atomically each epoch
(``config.json``, ``metrics.json``, ``metrics.csv``, ``checkpoint.safetensors``), so a
killed run continues with ``resume=True`` and ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._files import remove_temps
from ..checkpoint import atomic_write_text, load_checkpoint, read_checkpoint_meta, save_checkpoint
from ..config import RunConfig, check_not_legacy, config_from_dict, config_to_dict
from ..optim import build_optimizer
from ..plots.figures import capture_transformers
from ..schedules import set_lr
from ..tasks import Task, build_task
from .distributed import World, session
from .progress import Progress

__all__ = ["CHECKPOINT", "check_resumable", "count_parameters", "cpu_line", "evaluate",
           "load_run", "native_bf16", "resolve_precision", "train", "transformer_coverage"]

CHECKPOINT = "checkpoint.safetensors"


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _flat(cfg_dict: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, section in cfg_dict.items() for k, v in section.items()}


def to_channels_last(model: nn.Module) -> nn.Module:
    """Channels-last memory for the weights of every convolution: ``channels_last`` in
    2-D, ``channels_last_3d`` in 3-D (``model.to(memory_format=...)`` takes one kind)."""
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            m.to(memory_format=torch.channels_last_3d)
        elif isinstance(m, nn.Conv2d):
            m.to(memory_format=torch.channels_last)
    return model


# Where a run trains is not part of its recipe: a run started on a GPU may be resumed (or
# counted in a table) on the CPU and back; each epoch's device is in the history.
_NOT_RECIPE = {"train.device"}


def check_resumable(saved: dict[str, Any], cfg: RunConfig, out: Path) -> None:
    """Refuse to resume a run of another task or another configuration (the device may
    differ)."""
    check_not_legacy(saved, f"{out}/{CHECKPOINT} config")
    saved_task = saved.get("task", {}).get("name") if isinstance(saved.get("task"), dict) else None
    if saved_task != cfg.task.name:
        raise ValueError(f"--resume of {out}: it holds a run of task {saved_task!r}, but the "
                         f"given configuration is of task {cfg.task.name!r}")
    given = _flat(config_to_dict(cfg))
    before = _flat(config_to_dict(config_from_dict(saved, f"{out}/{CHECKPOINT} config")))
    skip = set(_NOT_RECIPE)
    if "auto" in (before.get("train.precision"), given.get("train.precision")):
        # auto is whatever the machine trains best in: a bf16 or fp32 run is one of its
        # runs, and each epoch records the precision it used.
        skip.add("train.precision")
        if None in (before.get("train.channels_last"), given.get("train.channels_last")):
            skip.add("train.channels_last")  # decided with the precision
    diff = {k: (before.get(k), given.get(k)) for k in sorted(set(before) | set(given))
            if before.get(k) != given.get(k) and k not in skip}
    if diff:
        shown = ", ".join(f"{k}: {a!r} saved, {b!r} given" for k, (a, b) in diff.items())
        raise ValueError(f"{out} holds a run with a different configuration ({shown}): give "
                         "the saved configuration to continue it, or choose another --out")


def _write_metrics(out: Path, task: Task, history: list[dict], params: int,
                   eval_keys: list[str]) -> dict:
    last = history[-1]
    metrics = {
        **{k: last[k] for k in eval_keys},
        "epochs_done": last["epoch"],
        "task": task.name,
        **task.summary(),
        "parameters": params,
        "train_seconds": sum(h["seconds"] for h in history),
        "history": history,
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    buf = io.StringIO()
    # Every key of any epoch (a run resumed by a newer torchstn may record more).
    fields = list(dict.fromkeys(k for row in history for k in row))
    writer = csv.DictWriter(buf, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(out / "metrics.csv", buf.getvalue())
    return metrics


def _add(totals: dict[str, Any], sums: dict[str, Any]) -> None:
    for key, value in sums.items():
        totals[key] = totals[key] + value if key in totals else value


def _numbers(totals: dict[str, Any]) -> dict[str, float]:
    return {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in totals.items()}


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    # Torch's global generator (dropout, ...) restarts from (seed, epoch, rank) every
    # epoch, so a resumed run draws what the uninterrupted one drew.
    return (seed * 1_000_003 + epoch) * 1009 + rank


_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")


def cpu_line() -> str:
    """The CPU's model name, which of the flags that matter for bf16 it has, and torch's
    thread count: the header of every benchmark table."""
    import platform

    model, flags = platform.processor() or "unknown CPU", set()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    has = ", ".join(f for f in _FLAGS if f in flags) or "none of " + ", ".join(_FLAGS)
    return (f"CPU: {model}; flags: {has}; native bf16: "
            f"{'yes' if native_bf16('cpu') else 'no (emulated)'}; "
            f"threads: {torch.get_num_threads()}")


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA device of compute capability
    8.0 or more (Ampere on), a CPU with AVX-512 BF16 or AMX. Elsewhere oneDNN (or CUDA)
    emulates it, several times slower than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        # (oneDNN's own "bf16 supported" is true from AVX-512 on, where it emulates it.)
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``fp32`` or ``bf16`` for a run's ``train.precision`` on ``device`` (``auto``: bf16
    where :func:`native_bf16`, else fp32)."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32, bf16 or auto, got {precision!r}")
    return precision


def autocast(precision: str, device: torch.device):
    """The autocast context of a run's ``train.precision`` (``bf16``: bfloat16; ``auto``
    as :func:`resolve_precision` decides on ``device``)."""
    precision = resolve_precision(precision, device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def evaluate(task: Task, model: nn.Module, world: World | None = None, *,
             precision: str = "fp32") -> dict[str, float]:
    """The task's test metrics of ``model``, sharded over the ranks and reduced."""
    world = world or World(device=task.device)
    with autocast(precision, task.device):
        sums = task.evaluate(model, rank=world.rank, world=world.size)
    return task.eval_metrics(world.sum(_numbers(sums)))


def train(cfg: RunConfig, out: str | Path, *, data_dir=None, resume: bool = False,
          progress: bool = True, figures: bool = True, stop_after: int | None = None) -> dict:
    """Train ``cfg`` into folder ``out``; return the metrics (also in ``out/metrics.json``).

    Under torchrun every rank runs this with the same arguments; each takes its shard of
    every batch, and rank 0 alone writes. ``stop_after``: train at most this many epochs in
    this call (to fit a time slot), then return; ``resume=True`` continues.
    """
    cfg = cfg.resolved()
    out = Path(out)
    ckpt = out / CHECKPOINT
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(
            stop_after, int) or stop_after < 1):
        raise ValueError(f"stop_after must be an int >= 1 or None, got {stop_after!r}")
    if ckpt.exists() and not resume:
        raise ValueError(f"{out} already holds a run ({CHECKPOINT}): pass --resume to "
                         "continue it or choose another --out")
    with session(cfg.train.device) as world:
        batch_size = cfg.train.batch_size
        if batch_size % world.size:
            raise ValueError(f"batch_size must be divisible by the world size {world.size} "
                             f"(every rank takes batch_size / {world.size} images of each "
                             f"batch), got {batch_size}")
        task = build_task(cfg.task, data_dir=data_dir, device=world.device,
                          seed=cfg.train.seed)
        torch.manual_seed(cfg.train.seed)
        model = task.build_model()
        if not ckpt.exists():
            task.init_model(model)
        model = model.to(world.device)
        precision = resolve_precision(cfg.train.precision, world.device)
        channels_last = cfg.train.channels_last
        if channels_last if channels_last is not None else precision == "bf16":
            to_channels_last(model)
        opt = build_optimizer(model, cfg.optim)
        history: list[dict] = []
        if ckpt.exists():
            if world.primary:
                remove_temps(out)  # what a killed run's cut-off writes left
            meta = read_checkpoint_meta(ckpt)
            if meta.get("weights_only") and meta["epoch"] < cfg.train.epochs:
                raise ValueError(f"{ckpt} holds weights only (its optimizer state was "
                                 f"stripped when the run finished at epoch {meta['epoch']}): "
                                 "it cannot be trained further; choose another --out")
            check_resumable(meta["config"], cfg, out)
            meta = load_checkpoint(ckpt, model, opt)
            history = meta["history"]
            before = history[-1].get("precision") if history else None
            if before not in (None, precision) and world.primary:
                print(f"note: {out} trained its first {len(history)} epochs in {before} and "
                      f"continues in {precision} (precision {cfg.train.precision} on this "
                      "machine; each epoch records its own)", file=sys.stderr)
        if world.primary:
            atomic_write_text(out / "config.json",
                              json.dumps(config_to_dict(cfg), indent=2) + "\n")
        return _loop(cfg, out, task, model, opt, history, world, precision,
                     progress=progress, figures=figures, stop_after=stop_after)


def _loop(cfg: RunConfig, out: Path, task: Task, model: nn.Module,
          opt: torch.optim.Optimizer, history: list[dict], world: World, precision: str, *,
          progress: bool,
          figures: bool, stop_after: int | None) -> dict:
    net = world.wrap(model)
    n_params = count_parameters(model)
    batch_size = cfg.train.batch_size
    steps = -(-task.num_train_examples() // batch_size)
    first = len(history)
    last = cfg.train.epochs if stop_after is None else min(cfg.train.epochs, first + stop_after)
    metrics = None
    eval_keys: list[str] = []
    for epoch in range(first, last):
        lr = set_lr(opt, cfg, epoch)  # the rate the epoch starts at (in the history)
        torch.manual_seed(_epoch_seed(cfg.train.seed, epoch, world.rank))
        net.train()
        bar = Progress(steps, f"epoch {epoch + 1}/{cfg.train.epochs}",
                       progress and world.primary)
        start = time.perf_counter()
        data_time, totals = 0.0, {}
        t0 = time.perf_counter()
        for step, batch in enumerate(task.train_batches(epoch, batch_size, rank=world.rank,
                                                        world=world.size), start=1):
            data_time += time.perf_counter() - t0
            if step > 1:
                set_lr(opt, cfg, epoch + (step - 1) / steps)
            with autocast(precision, world.device):
                loss, sums = task.train_step(net, batch)
            # DDP averages the ranks' gradients; a shard of other than batch / world
            # examples (the last batch of an epoch) is weighted by its share. (The task
            # tells the batch's size: an all-reduce per step cost 10% here.)
            scale = 1 if world.size == 1 else (
                sums["count"] * world.size / task.batch_examples(step - 1, batch_size))
            opt.zero_grad(set_to_none=True)
            (loss if scale == 1 else loss * scale).backward()
            opt.step()
            _add(totals, sums)
            bar.update(step, lambda totals=totals: _running(task, totals))
            t0 = time.perf_counter()
        seconds = time.perf_counter() - start
        reduced = world.sum(_numbers(totals))
        train_metrics = task.train_metrics(reduced)
        if not all(math.isfinite(v) for v in train_metrics.values()):
            raise FloatingPointError(f"training diverged in epoch {epoch + 1} "
                                     f"({train_metrics})")
        world.broadcast_buffers(model)
        test_metrics = evaluate(task, model, world, precision=precision)
        eval_keys = list(test_metrics)
        seen = reduced.get("count", 0)
        inside = transformer_coverage(task, model)
        history.append({"epoch": epoch + 1, "lr": lr, **train_metrics, **test_metrics,
                        "seconds": seconds, "images_per_s": seen / seconds,
                        "data_seconds": data_time, "device": world.device.type,
                        "precision": precision, **inside})
        if world.primary:
            _warn_dead(inside, epoch + 1)
        shown = " ".join(f"{k.removeprefix('train_')} {v:.4g}" for k, v in train_metrics.items())
        shown += " | " + " ".join(f"{k} {v:.4g}" for k, v in test_metrics.items())
        bar.close(f"{shown} | {seen / seconds:.0f} img/s")  # all ranks' metrics
        if world.primary:
            meta = {"epoch": epoch + 1, "config": config_to_dict(cfg), "history": history}
            if task.data_dir is not None:  # where eval and show look by default
                meta["data_dir"] = str(Path(task.data_dir).resolve())
            save_checkpoint(out / CHECKPOINT, model, opt, meta)
            metrics = _write_metrics(out, task, history, n_params, eval_keys)
            task.after_epoch(out, model, history)
        world.barrier()  # no rank runs ahead of the checkpoint it may be killed after
    if metrics is None:  # resumed a run that had already finished, or a rank other than 0
        eval_keys = eval_keys or [k for k in history[-1] if k.startswith(("test_", "val_"))]
        metrics = (_write_metrics(out, task, history, n_params, eval_keys) if world.primary
                   else {**{k: history[-1][k] for k in eval_keys},
                         "epochs_done": history[-1]["epoch"], "history": history})
    if figures and world.primary:
        task.figures(out, model, history)
    return metrics


#: Test inputs the engine runs through the model after every epoch to see where its
#: transformers read.
COVERAGE_INPUTS = 64
#: A transformer with less than this share (%) of its sampling points inside its input is
#: reported: where it reads only padding it gets no gradient, and it may never come back.
DEAD_INSIDE = 1.0


def transformer_coverage(task: Task, model: nn.Module) -> dict[str, float]:
    """``{"st<i>_inside": %}``: for each spatial transformer of ``model`` (each member of a
    parallel one), the share of its sampling points that fall inside its input, on the
    task's first :data:`COVERAGE_INPUTS` test inputs. Empty for a model without a
    transformer, a task that does not give its inputs, or a model that does not run its
    transformers on them."""
    from torchstn.modules import find_transformers

    if not find_transformers(model):
        return {}
    try:
        inputs = task.example_inputs(COVERAGE_INPUTS)
    except NotImplementedError:
        return {}
    if len(inputs) != 1:
        return {}
    try:
        records = capture_transformers(model, inputs[0])  # no_grad, eval mode, restored
    except Exception as exc:  # a diagnostic: it never ends a run
        print(f"warning: could not see where the transformers read ({exc!r})", file=sys.stderr)
        return {}
    return {f"st{i}_inside": float((rec["grid"].abs() <= 1).all(-1).double().mean()) * 100
            for i, rec in enumerate(records, start=1)}


def _warn_dead(inside: dict[str, float], epoch: int) -> None:
    for key, share in inside.items():
        if share < DEAD_INSIDE:
            number = key.removeprefix("st").removesuffix("_inside")
            print(f"warning: after epoch {epoch}, spatial transformer {number} of "
                  f"{len(inside)} reads inside its input at only {share:.2f}% of its sampling "
                  f"points (on {COVERAGE_INPUTS} test inputs): where it reads padding it gets "
                  "no gradient and may never come back; a lower --loc-lr-mult helps "
                  "(docs/experiments/addition.md)", file=sys.stderr)


def _running(task: Task, totals: dict[str, Any]) -> str:
    """The running training metrics of this rank, for the progress bar (the epoch's last
    line shows every rank's)."""
    if not totals or not totals.get("count"):  # nothing yet, or an empty first shard
        return ""
    return " ".join(f"{k.removeprefix('train_')} {v:.4g}"
                    for k, v in task.train_metrics(_numbers(totals)).items())


def load_run(out: str | Path, *, device: str | None = None,
             data_dir=None) -> tuple[RunConfig, Task, nn.Module, dict]:
    """The configuration, task, trained model (eval mode) and checkpoint metadata of run
    folder ``out``.

    ``data_dir``: default, the data folder the run was trained from (saved with it), if it
    still exists; else the task's own default.
    """
    out = Path(out)
    ckpt = out / CHECKPOINT
    if not ckpt.is_file():
        raise FileNotFoundError(f"{out}: no {CHECKPOINT} (not a torchstn run folder?)")
    saved = read_checkpoint_meta(ckpt)
    cfg = config_from_dict(saved["config"], f"{ckpt} config")
    if data_dir is None and saved.get("data_dir") and Path(saved["data_dir"]).is_dir():
        data_dir = saved["data_dir"]  # the data the run was trained on, if still there
    where = torch.device(device or "cpu")
    task = build_task(cfg.task, data_dir=data_dir, device=where, seed=cfg.train.seed)
    model = task.build_model()
    meta = load_checkpoint(ckpt, model)
    model.to(where).eval()
    return cfg, task, model, meta


#: The name before 0.2 (``reports.reproduce`` used it across files).
_check_resumable = check_resumable
