"""Datasets: IDX files (MNIST, Fashion-MNIST)."""

from .idx import DATASETS, download, load_idx_dataset, read_idx, resolve_data_dir

__all__ = ["DATASETS", "download", "load_idx_dataset", "read_idx", "resolve_data_dir"]
