"""SVHN, the Street View House Numbers (Netzer et al. 2011), as published.

Format 1 (full house numbers): ``<data-dir>/svhn/<split>/`` holds the PNGs and
``digitStruct.mat`` as ``<split>.tar.gz`` unpacks (the archive itself is read too, with
no unpacking). ``digitStruct.mat`` is a MATLAB v7.3 file, that is HDF5: ``/digitStruct/
name`` and ``/digitStruct/bbox`` are columns of object references; a name is a column of
UTF-16 code units; a bbox is a group of ``label``, ``left``, ``top``, ``width`` and
``height``, each a 1x1 number for a one-digit image or a column of references to 1x1
numbers for several. Label 10 means the digit 0.

Each number is cropped as in Goodfellow et al. (2013): the union of its digit boxes,
expanded by 30% in each direction, resized to 64x64 (``size=64``); the loose variant
(``size=128``) takes a box twice as large around the same centre (more background),
resized to 128x128. Outside the photo the crop is black. Numbers of more than
:data:`MAX_DIGITS` digits are dropped (and counted). The preprocessed arrays are cached
under ``<data-dir>/svhn/cache/``, written atomically.

Format 2 (cropped digits): ``<data-dir>/svhn/<split>_32x32.mat``, a MATLAB v5 file with
``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1), read with SciPy.

Labels of numbers are ``(N, 5)`` int64, digit ``k`` of the number in column ``k`` (left
to right) and :data:`NO_DIGIT` (10) after its end, with lengths ``(N,)`` from 1 to 5.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._files import atomic_write
from .idx import resolve_data_dir

__all__ = ["MAX_DIGITS", "NO_DIGIT", "SPLITS", "SVHNNumbers", "crop_box",
           "load_svhn_digits", "load_svhn_numbers", "read_digit_struct"]

MAX_DIGITS = 5
NO_DIGIT = 10
SPLITS = ("train", "test", "extra")
SIZES = (64, 128)
_FIELDS = ("label", "left", "top", "width", "height")
_CACHE_VERSION = 1


@dataclass
class SVHNNumbers:
    """Preprocessed house numbers of one split.

    ``images (N, 3, S, S)`` uint8, ``labels (N, 5)`` int64, ``lengths (N,)`` int64,
    ``names`` the PNG of each row, ``dropped`` how many numbers had more than 5 digits.
    """

    images: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor
    names: list[str]
    dropped: int


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is in the svhn extra
        raise ImportError("reading SVHN's digitStruct.mat needs h5py: "
                          "pip install 'torchstn[svhn]'") from e
    return h5py


def read_digit_struct(source, where: str | None = None) -> list[tuple[str, np.ndarray]]:
    """The entries of a ``digitStruct.mat`` (a path or a binary file object).

    Returns one ``(name, boxes)`` per image, ``boxes (K, 5)`` float64 with columns
    ``label, left, top, width, height`` (label 10 as in the file). ``where`` names the
    file in errors (default: the path).
    """
    h5py = _h5py()
    where = where or str(source)
    try:
        f = h5py.File(source, "r")
    except (OSError, ValueError) as e:
        raise ValueError(f"{where}: not a readable MATLAB v7.3 (HDF5) digitStruct.mat "
                         f"({e})") from e
    with f:
        try:
            names, bboxes = f["digitStruct/name"], f["digitStruct/bbox"]
            if names.shape != bboxes.shape or names.ndim != 2 or 1 not in names.shape:
                raise ValueError(f"name {names.shape} and bbox {bboxes.shape} must be "
                                 f"columns of one length")
            name_refs, box_refs = names[()].reshape(-1), bboxes[()].reshape(-1)
            out = []
            for i, (nref, bref) in enumerate(zip(name_refs, box_refs)):
                codes = np.asarray(f[nref][()]).reshape(-1)
                name = "".join(map(chr, codes.astype(np.int64)))
                group = f[bref]
                columns = [_field(f, group[key], h5py) for key in _FIELDS]
                if len({len(c) for c in columns}) != 1 or not len(columns[0]):
                    raise ValueError(f"entry {i} ({name}): the bbox fields have lengths "
                                     f"{[len(c) for c in columns]}")
                out.append((name, np.stack(columns, 1)))
        except (KeyError, OSError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: not the published digitStruct layout ({e})") from e
    return out


def _field(f, dataset, h5py) -> np.ndarray:
    """One bbox field: a 1x1 number, or a column of references to 1x1 numbers."""
    raw = dataset[()]
    if h5py.check_dtype(ref=dataset.dtype) is not None:
        return np.array([float(np.asarray(f[r][()]).reshape(-1)[0])
                         for r in np.asarray(raw).reshape(-1)])
    return np.asarray(raw, dtype=np.float64).reshape(-1)


def crop_box(boxes: np.ndarray, size: int) -> tuple[float, float, float, float]:
    """The crop ``(x0, y0, x1, y1)`` in pixels of a number with digit ``boxes (K, 5)``:
    the union expanded by 30% each way (``size=64``), or twice that box (``size=128``)."""
    left, top = boxes[:, 1], boxes[:, 2]
    x0, y0 = left.min(), top.min()
    x1, y1 = (left + boxes[:, 3]).max(), (top + boxes[:, 4]).max()
    grow = 1.3 * (2.0 if size == 128 else 1.0)
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * grow, (y1 - y0) * grow
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def _crop(png: bytes, box, size: int, where: str) -> np.ndarray:
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(png))
        image = image.convert("RGB")
    except Exception as e:  # PIL raises many kinds for a bad file
        raise ValueError(f"{where}: not a readable image ({e})") from e
    # PIL crops outside the image as black; resize with bilinear filtering.
    x0, y0, x1, y1 = (round(v) for v in box)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    crop = image.crop((x0, y0, x1, y1)).resize((size, size), Image.BILINEAR)
    return np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1)


class _Source:
    """The PNGs and digitStruct.mat of a split: a folder, or the ``.tar.gz`` archive."""

    def __init__(self, root: Path, split: str):
        self.folder, self.archive = root / split, root / f"{split}.tar.gz"
        self.split, self._tar = split, None
        if (self.folder / "digitStruct.mat").is_file():
            self.where = str(self.folder)
        elif self.archive.is_file():
            self.where = str(self.archive)
            try:
                self._tar = tarfile.open(self.archive, "r:gz")
                self._members = {m.name.lstrip("./"): m for m in self._tar.getmembers()
                                 if m.isfile()}
            except (tarfile.TarError, OSError, EOFError) as e:
                raise ValueError(f"{self.archive}: not a readable .tar.gz ({e})") from e
        else:
            raise FileNotFoundError(
                f"SVHN {split}: neither {self.folder / 'digitStruct.mat'} nor "
                f"{self.archive} exists: put the published {split}.tar.gz (or its "
                f"unpacked {split}/ folder) in {root}")

    def read(self, name: str) -> bytes:
        if self._tar is None:
            path = self.folder / name
            if not path.is_file():
                raise FileNotFoundError(f"{path}: listed in {self.folder / 'digitStruct.mat'}"
                                        f" but missing")
            return path.read_bytes()
        member = self._members.get(f"{self.split}/{name}")
        if member is None:
            raise FileNotFoundError(f"{self.archive}: {self.split}/{name} is listed in its "
                                    f"digitStruct.mat but missing")
        try:
            return self._tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ValueError(f"{self.archive}: cannot read {member.name} ({e})") from e

    def struct(self) -> list[tuple[str, np.ndarray]]:
        if self._tar is None:
            return read_digit_struct(self.folder / "digitStruct.mat")
        raw = self.read("digitStruct.mat")
        return read_digit_struct(io.BytesIO(raw), f"{self.archive}:{self.split}/digitStruct.mat")

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def _check(split: str, size: int) -> None:
    _check_split(split)
    if size not in SIZES:
        raise ValueError(f"size must be 64 (tight crops) or 128 (loose), got {size!r}")


def load_svhn_numbers(split: str = "train", size: int = 64, data_dir=None, *,
                      cache: bool = True) -> SVHNNumbers:
    """The house numbers of ``split`` (``train``, ``test`` or ``extra``), cropped to
    ``size`` (64 tight, 128 loose); cached in ``<data-dir>/svhn/cache/`` after the first
    call (``cache=False``: neither read nor write it)."""
    _check(split, size)
    root = resolve_data_dir(data_dir) / "svhn"
    cached = root / "cache" / f"{split}-{size}.npz"
    if cache and cached.is_file():
        try:
            with np.load(cached) as z:
                if int(z["version"]) == _CACHE_VERSION:
                    return SVHNNumbers(torch.from_numpy(z["images"]),
                                       torch.from_numpy(z["labels"]),
                                       torch.from_numpy(z["lengths"]),
                                       [str(n) for n in z["names"]], int(z["dropped"]))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"{cached}: unreadable cache ({e}); delete it to rebuild") from e
    source = _Source(root, split)
    try:
        entries = source.struct()
        images, labels, lengths, names, dropped = [], [], [], [], 0
        for name, boxes in entries:
            if len(boxes) > MAX_DIGITS:
                dropped += 1
                continue
            digits = boxes[:, 0].astype(np.int64)
            if ((digits < 1) | (digits > 10)).any():
                raise ValueError(f"{source.where}: {name} has labels {digits.tolist()}, "
                                 f"expected 1 to 10 (10 is the digit 0)")
            row = np.full(MAX_DIGITS, NO_DIGIT, dtype=np.int64)
            row[: len(digits)] = digits % 10
            png = source.read(name)
            images.append(_crop(png, crop_box(boxes, size), size, f"{source.where}/{name}"))
            labels.append(row)
            lengths.append(len(digits))
            names.append(name)
    finally:
        source.close()
    if not images:
        raise ValueError(f"{source.where}: no numbers of at most {MAX_DIGITS} digits")
    out = SVHNNumbers(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels)),
                      torch.tensor(lengths, dtype=torch.int64), names, dropped)
    if cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cached, lambda tmp: np.savez(
            tmp, version=_CACHE_VERSION, images=out.images.numpy(),
            labels=out.labels.numpy(), lengths=out.lengths.numpy(),
            names=np.array(out.names), dropped=dropped))
    return out


def load_svhn_digits(split: str = "train", data_dir=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Format 2: the cropped 32x32 digits of ``<data-dir>/svhn/<split>_32x32.mat``.

    Returns ``images (N, 3, 32, 32)`` uint8 and ``labels (N,)`` int64 in 0..9.
    """
    _check_split(split)
    path = resolve_data_dir(data_dir) / "svhn" / f"{split}_32x32.mat"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: put the published {path.name} there")
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
        x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    except Exception as e:  # SciPy raises several kinds for a corrupt file
        raise ValueError(f"{path}: not a readable SVHN format-2 .mat ({e})") from e
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or len(y) != x.shape[3]:
        raise ValueError(f"{path}: X must be uint8 (32, 32, 3, N) with N labels y, got "
                         f"{x.dtype} {x.shape} and {len(y)} labels")
    if ((y < 1) | (y > 10)).any():
        raise ValueError(f"{path}: labels must be 1 to 10 (10 is the digit 0), got "
                         f"{sorted(set(y.tolist()))[:12]}")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
    return images, torch.from_numpy(y.astype(np.int64) % 10)

