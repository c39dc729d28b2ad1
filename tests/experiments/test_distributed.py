"""torchrun + DistributedDataParallel on the CPU: 2 gloo processes against one process."""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import torch
from safetensors.torch import load_file

from torchstn.experiments import load_run, make_config, train
from torchstn.experiments.engine import World, evaluate, loop, read_checkpoint_meta

# 501 training digits in batches of 128: the last batch (117) splits 58 / 59, so the
# weighting of unequal shards is exercised too.
RUN = ["--distortion", "rts", "--model", "st-cnn-affine", "--train-size", "501",
       "--test-size", "100", "--batch-size", "128", "--seed", "7", "--no-progress"]


def _torchrun(out, data_dir, *extra, procs=2, run=RUN):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={procs}", "-m", "torchstn", "train", *run, "--out", str(out),
           "--data-dir", str(data_dir), *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((out / "metrics.json").read_text())


def _weights(out):
    return {k: v for k, v in load_file(str(out / "checkpoint.safetensors")).items()
            if k.startswith("model.")}


def _single(out, data_dir, *extra, run=RUN):
    cmd = [sys.executable, "-m", "torchstn", "train", *run, "--threads", "1", "--out",
           str(out), "--data-dir", str(data_dir), *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((out / "metrics.json").read_text())


def _strip(history):
    return [{k: v for k, v in h.items() if "seconds" not in k and k != "images_per_s"}
            for h in history]


def test_two_processes_train_what_one_process_trains(data_dir, tmp_path):
    """SGD with momentum, 2 epochs (8 steps): the same parameters up to the all-reduce's
    rounding (measured: max |difference| 7.5e-9 here; tolerance 1e-6 absolute). Adam
    divides by the gradients' running RMS, which magnifies that rounding: 2e-5 after the
    same 8 steps, so the equality is tested with SGD."""
    extra = ["--epochs", "2", "--optimizer", "sgd", "--lr", "0.05"]
    one = _single(tmp_path / "one", data_dir, *extra)
    two = _torchrun(tmp_path / "two", data_dir, *extra)
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)
    # The training metrics are reduced over both ranks: the whole epoch's images.
    for h1, h2 in zip(one["history"], two["history"]):
        assert h1["train_error"] == pytest.approx(h2["train_error"], abs=0.5)
        assert h1["train_loss"] == pytest.approx(h2["train_loss"], rel=1e-4)
    # Evaluation is sharded and reduced: one process scoring the saved model agrees.
    _, task, model, _ = load_run(tmp_path / "two", data_dir=data_dir)
    alone = evaluate(task, model)
    assert alone["test_error"] == two["test_error"]
    assert alone["test_loss"] == pytest.approx(two["test_loss"], rel=1e-6)
    # Rank 0 alone wrote, and the checkpoint holds the unwrapped model (no "module.").
    assert not any(k.startswith("model.module.") for k in b)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "checkpoint.safetensors", "config.json", "curves.png", "metrics.csv", "metrics.json",
        "transformer.png"]


@pytest.mark.slow  # two processes for 20-40 s; the first test here covers DDP
def test_two_processes_train_house_numbers_as_one_process_does(data_dir, tmp_path):
    """The sequence task under torchrun (what `reproduce svhn` runs on many GPUs): each
    rank renders and crops its shard of every batch of numbers (the last, 23, splits 11 /
    12); SGD, no dropout (each
    rank would draw its own masks), the same weights up to the all-reduce's rounding."""
    run = ["--task", "house-numbers", "--model", "st-cnn-multi", "--width", "0.1",
           "--dropout", "0", "--train-size", "75", "--test-size", "30", "--batch-size",
           "26", "--epochs", "2", "--optimizer", "sgd", "--lr", "0.01", "--seed", "3",
           "--no-progress"]
    one = _single(tmp_path / "one", data_dir, run=run)
    two = _torchrun(tmp_path / "two", data_dir, run=run)
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)
    assert two["test_error"] == one["test_error"]
    assert two["test_loss"] == pytest.approx(one["test_loss"], rel=1e-5)
    assert two["history"][0]["train_loss"] == pytest.approx(
        one["history"][0]["train_loss"], rel=1e-5)


@pytest.mark.slow  # two processes for 20-40 s; the first test here covers DDP
def test_a_killed_two_process_run_resumes_where_an_uninterrupted_one_ends(data_dir, tmp_path):
    """SIGKILL to both ranks and torchrun once the first epoch's checkpoint exists, then
    --resume. 1,025 digits in batches of 128: the last batch has one image, so rank 0's
    shard of it is empty."""
    extra = ["--epochs", "3", "--train-size", "1025"]
    full = _torchrun(tmp_path / "full", data_dir, *extra)
    cut = tmp_path / "cut"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node=2", "-m", "torchstn", "train", *RUN, *extra, "--out", str(cut),
           "--data-dir", str(data_dir)]
    log = tmp_path / "cut.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    ckpt = cut / "checkpoint.safetensors"
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    # torchrun starts each rank in a session of its own: kill the ranks themselves.
    ranks = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], text=True,
                                            capture_output=True).stdout.split()]
    for pid in [*ranks, proc.pid]:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    while any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in ranks):
        time.sleep(0.02)
    assert ckpt.exists(), log.read_text()
    assert len(ranks) == 2, log.read_text()
    killed_at = read_checkpoint_meta(ckpt)["epoch"]
    assert killed_at < 3, "the run finished before it could be killed: make it longer"
    time.sleep(0.5)
    assert read_checkpoint_meta(ckpt)["epoch"] == killed_at  # nobody trains on
    resumed = _torchrun(cut, data_dir, *extra, "--resume")
    assert _strip(resumed["history"]) == _strip(full["history"])
    a, b = _weights(tmp_path / "full"), _weights(cut)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # not a zombie
    except OSError:
        return False


def _writer(rank, out, data_dir, port, log):
    """One rank of a 2-process run that records every file the engine writes."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from torchstn.experiments import checkpoint
    from torchstn.experiments.plots import viz

    # Every file the experiments write goes through atomic_write (checkpoints, JSON, CSV,
    # figures): record each call in both ranks.
    writes = []
    real = checkpoint.atomic_write

    def recorded(path, write):
        writes.append(str(path))
        return real(path, write)

    checkpoint.atomic_write = viz.atomic_write = recorded
    cfg = make_config(distortion="r", model="st-fcn-affine", train_size=300, test_size=50,
                      batch_size=100, epochs=2)
    train(cfg, out, data_dir=data_dir, progress=False)
    with open(f"{log}.{rank}", "w") as f:
        json.dump(writes, f)


def test_only_rank_0_writes(data_dir, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "writes"
    mp.spawn(_writer, args=(str(tmp_path / "run"), str(data_dir), port, str(log)), nprocs=2)
    rank0 = json.loads((tmp_path / "writes.0").read_text())
    assert json.loads((tmp_path / "writes.1").read_text()) == []
    names = [os.path.basename(p) for p in rank0]
    assert names.count("checkpoint.safetensors") == 2 and names.count("transformer.png") == 1
    assert {"config.json", "metrics.json", "metrics.csv", "curves.png"} <= set(names)


def test_a_batch_the_world_does_not_divide_is_refused(data_dir, tmp_path, monkeypatch):
    @contextmanager
    def three_ranks(device):
        yield World(rank=0, size=3)

    monkeypatch.setattr(loop, "session", three_ranks)
    cfg = make_config(distortion="r", model="fcn", train_size=64, batch_size=128)
    with pytest.raises(ValueError, match="batch_size must be divisible by the world size 3 "
                                         r"\(every rank takes batch_size / 3 images of each "
                                         r"batch\), got 128"):
        train(cfg, tmp_path / "run", data_dir=data_dir, progress=False)
    assert not (tmp_path / "run").exists()  # nothing written


def test_device_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"):
        train(make_config(device="gpu"), tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device is 'cuda' but CUDA is not available"):
            train(make_config(device="cuda"), tmp_path)


def test_one_fixed_gpu_for_every_rank_is_refused(monkeypatch):
    from torchstn.experiments.engine import session

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"device must be 'cpu' or 'cuda' under torchrun \(each "
                                         r"rank takes cuda:LOCAL_RANK\), got 'cuda:1'"):
        with session("cuda:1"):
            pass
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="environment variable WORLD_SIZE must be an int, got "
                                         "'two'"):
        with session("cpu"):
            pass
