"""Datasets: IDX files (MNIST, Fashion-MNIST)."""

from .idx import DATASETS, load_idx_dataset, read_idx, resolve_data_dir

__all__ = ["DATASETS", "load_idx_dataset", "read_idx", "resolve_data_dir"]
