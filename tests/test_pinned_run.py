"""A short training run pinned bit for bit: redesigns of the engine must not move it.

The values were recorded with the code before the experiments package existed (commit
4cdbb9a's single-task training loop): rts, st-cnn-affine, 1 epoch of 2,000 training
digits, 500 test digits, seed 3, one torch thread.
"""

import hashlib

import torch

from torchstn.training import TrainConfig, load_run, train

PINNED = {"lr": 0.001, "train_loss": 2.295051528930664, "train_error": 87.8,
          "test_loss": 2.2757412109375, "test_error": 79.8}
PINNED_WEIGHTS = "ef60039ac005e50d72fef412c77274c0e8609497f49d672eff5102a68de69cd7"


def _digest(model: torch.nn.Module) -> str:
    d = hashlib.sha256()
    for name, value in model.state_dict().items():
        d.update(name.encode())
        d.update(value.contiguous().numpy().tobytes())
    return d.hexdigest()


def test_short_run_is_bit_identical_to_the_pinned_one(data_dir, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig(distortion="rts", model="st-cnn-affine", epochs=1, train_size=2000,
                          test_size=500, seed=3)
        metrics = train(cfg, tmp_path, data_dir=data_dir, progress=False, figures=False)
    finally:
        torch.set_num_threads(threads)
    got = {k: metrics["history"][0][k] for k in PINNED}
    assert got == PINNED
    assert _digest(load_run(tmp_path)[1]) == PINNED_WEIGHTS
