import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's CPU interpreter. Triton reads this when
# a kernel is defined, so it is set before any test imports torchstn's Triton kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets"

_COMPILE = "import torch; from torchstn.ops.numba import compile_kernels; compile_kernels(torch.{})"
_compiled: list[str] = []


def pytest_configure(config):
    """On several test processes (pytest-xdist), compile the Numba kernels once, before
    the processes start: float32 and float64 side by side, each in its own process, into
    Numba's on-disk cache. Otherwise every test process compiles the kernels its tests
    touch (minutes on a fresh clone; nearly all of them in each process). With a warm
    cache this only loads them (seconds)."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    try:
        from torchstn.ops.numba.backend import _drop_stale_cache
    except ImportError:
        return
    _drop_stale_cache()  # here, so the two compiling processes do not race on it
    start = time.perf_counter()
    procs = [(d, subprocess.Popen([sys.executable, "-c", _COMPILE.format(d)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
             for d in ("float32", "float64")]
    for dtype, proc in procs:
        err = proc.communicate()[1].decode().strip().splitlines()
        if proc.returncode:  # the kernels' own tests will fail and say why
            _compiled.append(f"{dtype} failed: {err[-1] if err else proc.returncode}")
    _compiled.append(f"in {time.perf_counter() - start:.0f} s")


def pytest_report_header(config):
    if _compiled:
        return "numba kernels (float32, float64) compiled or loaded " + ", ".join(_compiled)
    return None


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def data_dir():
    if not (DATA_DIR / "mnist").is_dir():
        pytest.skip(f"MNIST files not found under {DATA_DIR}")
    return DATA_DIR

