from pathlib import Path

import pytest
import torch

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def data_dir():
    if not (DATA_DIR / "mnist").is_dir():
        pytest.skip(f"MNIST files not found under {DATA_DIR}")
    return DATA_DIR


def smooth_image(n, c, h, w, dtype=torch.float64):
    """Band-limited test images: sums of a few low-frequency sinusoids, values in [0, 1]."""
    y = torch.linspace(-1, 1, h, dtype=dtype).view(1, 1, h, 1)
    x = torch.linspace(-1, 1, w, dtype=dtype).view(1, 1, 1, w)
    f = torch.rand(n, c, 1, 1, 4, dtype=dtype) * 2 + 0.5
    img = (torch.sin(f[..., 0] * x + f[..., 1] * 3) * torch.cos(f[..., 2] * y + f[..., 3] * 3))
    return (img + 1) / 2
