"""Reading the IDX format of MNIST and Fashion-MNIST (gzipped or not).

IDX: a big-endian header ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32
dimension sizes, then the data in row-major order. MNIST images are type 0x08 (uint8)
with 3 dimensions (magic 2051), labels uint8 with 1 dimension (magic 2049).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
from pathlib import Path

import numpy as np
import torch

from .._files import temp_beside

__all__ = ["DATASETS", "download", "load_idx_dataset", "read_idx", "resolve_data_dir"]

DATASETS = ("mnist", "fashion-mnist")
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# Public mirrors, tried in order, and the sha256 of each file's DECOMPRESSED IDX bytes
# (mirrors recompress the .gz files, so the compressed bytes differ between them).
MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
SHA256 = {
    "fashion-mnist": {
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    },
    "mnist": {
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    },
}
_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def _decompressed(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot read IDX file ({e})") from e


def parse_idx(raw: bytes, path: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Parse decompressed IDX bytes; errors name ``path``."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: header says shape {tuple(dims)} ({expected} data bytes) but the file "
            f"holds {len(raw) - header} data bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def read_idx(path: str | os.PathLike, *, sha256: str | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or plain, told apart by content) into a NumPy array.

    Args:
        path: the file.
        sha256: if given, the expected sha256 of the decompressed bytes.

    Raises:
        ValueError: naming the file, if it is truncated, has a bad magic number, its size
            does not match its header, or its checksum differs.
    """
    path = Path(path)
    raw = _decompressed(path)
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise ValueError(
            f"{path}: checksum mismatch (sha256 of the decompressed bytes is "
            f"{hashlib.sha256(raw).hexdigest()[:16]}..., expected {sha256[:16]}...): the file "
            "is corrupt or not the standard one; delete it to download it again"
        )
    return parse_idx(raw, path)


def _fetch(url: str) -> bytes:  # the one place that touches the network
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def download(dataset: str, data_dir=None) -> Path:
    """Download the missing files of ``dataset`` into ``<data_dir>/<dataset>/``.

    Each file is verified (its decompressed sha256) before it is moved into place, so a
    failed or corrupt download leaves nothing behind. Returns the dataset folder.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    folder = resolve_data_dir(data_dir) / dataset
    for stem, digest in SHA256[dataset].items():
        if any((folder / name).is_file() for name in (stem, stem + ".gz")):
            continue
        errors = []
        for mirror in MIRRORS[dataset]:
            url = mirror + stem + ".gz"
            try:
                data = _fetch(url)
                raw = gzip.decompress(data)
                if hashlib.sha256(raw).hexdigest() != digest:
                    raise ValueError("checksum mismatch")
                parse_idx(raw, url)
            except (OSError, EOFError, ValueError) as e:
                errors.append(f"{url}: {e}")
                continue
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = temp_beside(folder, f".{stem}-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, folder / (stem + ".gz"))
            except BaseException:
                os.unlink(tmp)
                raise
            break
        else:
            raise OSError(f"could not download {stem}.gz for {dataset}: " + "; ".join(errors))
    return folder


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir``, else ``$TORCHSTN_DATA``, else ``~/.cache/torchstn``.

    Each dataset lives in a subfolder named after it (``<root>/mnist/``).
    """
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("TORCHSTN_DATA")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "torchstn"


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"{folder / stem}[.gz] not found: pass --data-dir (or set TORCHSTN_DATA) to a folder "
        f"holding {folder.name}/{stem}.gz, or --download to fetch it"
    )


def load_idx_dataset(
    dataset: str = "mnist", split: str = "test", data_dir: str | os.PathLike | None = None,
    *, download_missing: bool = False, verify: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of one split of a dataset.

    Files are looked up in ``<data_dir>/<dataset>/`` (see :func:`resolve_data_dir`);
    ``download_missing`` fetches absent ones from the public mirrors first. ``verify``
    checks each file's decompressed sha256 against the published value.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if download_missing:
        download(dataset, data_dir)
    folder = resolve_data_dir(data_dir) / dataset
    stems = _FILES[(split, "images")], _FILES[(split, "labels")]
    images_path, labels_path = (_find(folder, stem) for stem in stems)
    digests = [SHA256[dataset][stem] if verify else None for stem in stems]
    images = read_idx(images_path, sha256=digests[0])
    labels = read_idx(labels_path, sha256=digests[1])
    if images.ndim != 3:
        raise ValueError(f"{images_path}: expected 3-D images, got shape {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"{labels_path}: expected {len(images)} labels to match {images_path.name}, "
            f"got shape {labels.shape}"
        )
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))
