import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's CPU interpreter. Triton reads this when
# a kernel is defined, so it is set before any test imports torchstn's Triton kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def data_dir():
    if not (DATA_DIR / "mnist").is_dir():
        pytest.skip(f"MNIST files not found under {DATA_DIR}")
    return DATA_DIR

