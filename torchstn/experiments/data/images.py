"""Your own images: a folder of class subfolders of JPEG or PNG files (read with Pillow).

Layout: ``DIR/<class>/<image>`` (a seeded split holds out ``test_fraction`` of each
class for testing), or ``DIR/train/<class>/...`` and ``DIR/test/<class>/...`` (the
split is yours). Classes are the subfolder names, sorted; every class must hold at least
one image. Images are decoded once, converted to RGB (or grayscale), resized as
configured and kept in memory as uint8.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["EXTENSIONS", "ImageFolder", "find_classes", "load_image"]

EXTENSIONS = (".jpg", ".jpeg", ".png")
RESIZES = ("stretch", "crop", "none")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def find_classes(root: Path) -> dict[str, list[Path]]:
    """The image files of each class subfolder of ``root`` (sorted), with clear errors for
    a missing folder, no class folders and an empty class."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"image folder {root} holds no class subfolders (expected "
                         f"{root}/<class>/<image>.png or .jpg)")
    files = {c.name: _images_in(c) for c in classes}
    empty = [name for name, found in files.items() if not found]
    if empty:
        raise ValueError(f"class folder {root / empty[0]} holds no JPEG or PNG files "
                         f"({len(empty)} empty class folder{'s' * (len(empty) > 1)})")
    return files


def load_image(path: Path, size: tuple[int, int] | None, resize: str,
               channels: int) -> torch.Tensor:
    """``(channels, H, W)`` uint8: the file decoded, converted and resized (``size``:
    ``(H, W)`` or None to keep its own)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            if size is not None and resize != "none" and im.size != (size[1], size[0]):
                im = _resized(im, size, resize)
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            w, h = im.size
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    return data.view(h, w, channels).permute(2, 0, 1).contiguous()


def _resized(im, size: tuple[int, int], resize: str):
    from PIL import Image

    h, w = size
    if resize == "crop":  # the shorter side to fit, then the centre
        scale = max(w / im.width, h / im.height)
        im = im.resize((max(w, round(im.width * scale)), max(h, round(im.height * scale))),
                       Image.Resampling.BILINEAR, reducing_gap=None)
        left, top = (im.width - w) // 2, (im.height - h) // 2
        return im.crop((left, top, left + w, top + h))
    return im.resize((w, h), Image.Resampling.BILINEAR)


class ImageFolder:
    """Images of a folder of class subfolders, split into a training and a test set.

    Args:
        root: the folder (see the module's description).
        size: ``(H, W)`` every image is brought to; None: keep each image's own size
            (they must then all have one size).
        resize: ``"stretch"`` (to ``size``, ignoring the aspect ratio), ``"crop"`` (the
            shorter side to ``size``, then the centre), or ``"none"`` (no resizing: every
            image must already be ``size``).
        channels: 3 (RGB) or 1 (grayscale).
        test_fraction: share of each class held out for testing, when ``root`` has no
            ``train``/``test`` subfolders (seeded by ``split_seed``; at least one image
            per class stays for training).
    """

    def __init__(self, root: str | os.PathLike, *, size: tuple[int, int] | None = None,
                 resize: str = "stretch", channels: int = 3, test_fraction: float = 0.2,
                 split_seed: int = 0):
        if resize not in RESIZES:
            raise ValueError(f"resize must be one of {list(RESIZES)}, got {resize!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        self.root = Path(root)
        self.size, self.resize, self.channels = size, resize, channels
        split = [self.root / "train", self.root / "test"]
        if all(p.is_dir() for p in split):
            train, test = find_classes(split[0]), find_classes(split[1])
            if list(train) != list(test):
                raise ValueError(f"{split[0]} and {split[1]} must hold the same class "
                                 f"folders, got {list(train)} and {list(test)}")
            pairs = {name: (train[name], test[name]) for name in train}
        else:
            gen = torch.Generator().manual_seed(split_seed)
            pairs = {}
            for name, files in find_classes(self.root).items():
                order = torch.randperm(len(files), generator=gen).tolist()
                n_test = min(len(files) - 1, round(test_fraction * len(files)))
                pairs[name] = ([files[i] for i in sorted(order[n_test:])],
                               [files[i] for i in sorted(order[:n_test])])
        self.classes = list(pairs)
        self.train_x, self.train_y = self._load([(f, c) for c, (tr, _) in enumerate(pairs.values())
                                                 for f in tr])
        self.test_x, self.test_y = self._load([(f, c) for c, (_, te) in enumerate(pairs.values())
                                               for f in te])

    def _load(self, items: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        images, shape, first = [], None, None
        for path, _ in items:
            img = load_image(path, self.size, self.resize, self.channels)
            got = tuple(img.shape[1:])
            if self.size is not None and got != tuple(self.size):
                raise ValueError(f"with resize='none' every image must be "
                                 f"{self.size[0]}x{self.size[1]}: {path} is {got[0]}x{got[1]}")
            if shape is None:
                shape, first = got, path
            elif got != shape:
                raise ValueError(f"images of mixed sizes: {first} is {shape[0]}x{shape[1]} "
                                 f"but {path} is {got[0]}x{got[1]} (set a size to resize them)")
            images.append(img)
        if not images:
            return (torch.zeros(0, self.channels, *(self.size or (1, 1)), dtype=torch.uint8),
                    torch.zeros(0, dtype=torch.long))
        return torch.stack(images), torch.tensor([c for _, c in items])
