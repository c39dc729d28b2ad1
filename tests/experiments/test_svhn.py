"""SVHN loaders on small files written here in the published layouts.

Format 1: ``<split>/`` (or ``<split>.tar.gz``) with numbered PNGs and a MATLAB v7.3
``digitStruct.mat`` (HDF5 behind a 512-byte MATLAB header; a struct array stored as
columns of object references into ``#refs#``; names as UTF-16 code units; each bbox field
a 1x1 number for one digit, a column of references to 1x1 numbers for several).
Format 2: ``<split>_32x32.mat``, MATLAB v5, ``X (32, 32, 3, N)`` uint8 and ``y (N, 1)``.
"""

import io
import tarfile

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")
Image = pytest.importorskip("PIL.Image")
scipy_io = pytest.importorskip("scipy.io")

from torchstn.experiments.data.svhn import (  # noqa: E402
    NO_DIGIT,
    crop_box,
    load_svhn_digits,
    load_svhn_numbers,
    read_digit_struct,
)

# name -> digit boxes (label, left, top, width, height), label 10 being the digit 0.
ENTRIES = [
    ("1.png", [(1, 10, 8, 6, 12), (9, 17, 9, 7, 12)]),
    ("2.png", [(10, 4, 3, 5, 10)]),
    ("3.png", [(2, 2, 2, 4, 8), (3, 7, 2, 4, 8), (4, 12, 2, 4, 8)]),
    ("4.png", [(5, 1, 1, 3, 6)] * 6),  # six digits: dropped
]


def _photo(i: int, w: int = 32, h: int = 24) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_digit_struct(path, entries, *, matlab_header=True):
    """A digitStruct.mat laid out as MATLAB v7.3 writes it (what SVHN publishes)."""
    with h5py.File(path, "w", userblock_size=512 if matlab_header else 0) as f:
        refs = f.create_group("#refs#")
        counter = iter(range(10**6))

        def ref(data):
            ds = refs.create_dataset(f"r{next(counter)}", data=data)
            return ds.ref

        group = f.create_group("digitStruct")
        dt = h5py.special_dtype(ref=h5py.Reference)
        names = group.create_dataset("name", (len(entries), 1), dtype=dt)
        bboxes = group.create_dataset("bbox", (len(entries), 1), dtype=dt)
        for i, (name, boxes) in enumerate(entries):
            names[i, 0] = ref(np.array([[ord(c)] for c in name], dtype=np.uint16))
            box = refs.create_group(f"b{i}")
            for k, field in enumerate(("label", "left", "top", "width", "height")):
                values = [float(b[k]) for b in boxes]
                if len(values) == 1:
                    box.create_dataset(field, data=np.array([[values[0]]]))
                else:
                    column = box.create_dataset(field, (len(values), 1), dtype=dt)
                    for j, v in enumerate(values):
                        column[j, 0] = ref(np.array([[v]]))
            bboxes[i, 0] = box.ref
    if matlab_header:
        with open(path, "r+b") as f:
            f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Dec  5 2011 "
                    b"HDF5 schema 1.00 .".ljust(116))


def write_split(root, split="train", entries=ENTRIES, *, archive=False, skip=()):
    """``root/svhn/<split>/`` (or ``<split>.tar.gz``) with PNGs and digitStruct.mat."""
    folder = root / "svhn" / split
    folder.mkdir(parents=True)
    write_digit_struct(folder / "digitStruct.mat", entries)
    for i, (name, _) in enumerate(entries):
        if name not in skip:
            Image.fromarray(_photo(i)).save(folder / name)
    if archive:
        with tarfile.open(root / "svhn" / f"{split}.tar.gz", "w:gz") as tar:
            tar.add(folder, arcname=split)
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
    return root


def expected_crop(i, boxes, size):
    """The crop computed independently: float64 box, PIL crop of a black-padded photo."""
    b = np.array(boxes, dtype=np.float64)
    x0, y0 = b[:, 1].min(), b[:, 2].min()
    x1, y1 = (b[:, 1] + b[:, 3]).max(), (b[:, 2] + b[:, 4]).max()
    grow = 1.3 if size == 64 else 2.6
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * grow, (y1 - y0) * grow
    box = [round(cx - w / 2), round(cy - h / 2), round(cx + w / 2), round(cy + h / 2)]
    pad = 200
    photo = np.zeros((24 + 2 * pad, 32 + 2 * pad, 3), np.uint8)
    photo[pad:pad + 24, pad:pad + 32] = _photo(i)
    crop = Image.fromarray(photo[box[1] + pad:box[3] + pad, box[0] + pad:box[2] + pad])
    return np.asarray(crop.resize((size, size), Image.BILINEAR)).transpose(2, 0, 1)


def test_read_digit_struct_reads_both_bbox_forms(tmp_path):
    path = tmp_path / "digitStruct.mat"
    write_digit_struct(path, ENTRIES)
    assert open(path, "rb").read(10) == b"MATLAB 7.3"
    got = read_digit_struct(path)
    assert [n for n, _ in got] == [n for n, _ in ENTRIES]
    for (_, boxes), (_, want) in zip(got, ENTRIES):
        np.testing.assert_array_equal(boxes, np.array(want, dtype=np.float64))


def test_crop_box_is_the_union_grown_by_30_percent():
    boxes = np.array([(1, 10, 8, 6, 12), (9, 17, 9, 7, 12)], dtype=np.float64)
    # union x 10..24, y 8..21: centre (17, 14.5), size 14 x 13 -> 18.2 x 16.9
    np.testing.assert_allclose(crop_box(boxes, 64), (7.9, 6.05, 26.1, 22.95))
    np.testing.assert_allclose(crop_box(boxes, 128), (-1.2, -2.4, 35.2, 31.4))


@pytest.mark.parametrize("archive", [False, True])
@pytest.mark.parametrize("size", [64, 128])
def test_numbers_are_cropped_labelled_and_padded(tmp_path, archive, size):
    write_split(tmp_path, archive=archive)
    data = load_svhn_numbers("train", size, tmp_path)
    assert data.names == ["1.png", "2.png", "3.png"] and data.dropped == 1
    assert data.images.dtype == torch.uint8 and data.images.shape == (3, 3, size, size)
    assert data.labels.tolist() == [[1, 9, NO_DIGIT, NO_DIGIT, NO_DIGIT],
                                    [0, NO_DIGIT, NO_DIGIT, NO_DIGIT, NO_DIGIT],
                                    [2, 3, 4, NO_DIGIT, NO_DIGIT]]
    assert data.lengths.tolist() == [2, 1, 3]
    for i in range(3):
        np.testing.assert_array_equal(data.images[i].numpy(),
                                      expected_crop(i, ENTRIES[i][1], size))


def test_the_cache_gives_the_same_arrays_and_is_used(tmp_path):
    write_split(tmp_path)
    first = load_svhn_numbers("train", 64, tmp_path)
    cached = tmp_path / "svhn" / "cache" / "train-64.npz"
    assert cached.is_file()
    assert [p.name for p in cached.parent.iterdir()] == ["train-64.npz"]  # no temp left
    (tmp_path / "svhn" / "train" / "1.png").unlink()  # only the cache can serve it now
    second = load_svhn_numbers("train", 64, tmp_path)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.names == first.names and second.dropped == 1
    with pytest.raises(FileNotFoundError, match="1.png"):
        load_svhn_numbers("train", 64, tmp_path, cache=False)


def test_a_corrupt_cache_is_named(tmp_path):
    write_split(tmp_path)
    cached = tmp_path / "svhn" / "cache" / "train-64.npz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match="train-64.npz.*delete it"):
        load_svhn_numbers("train", 64, tmp_path)


def test_a_missing_png_is_named_and_no_cache_is_written(tmp_path):
    write_split(tmp_path, skip=("3.png",))
    with pytest.raises(FileNotFoundError, match="3.png.*missing"):
        load_svhn_numbers("train", 64, tmp_path)
    assert not (tmp_path / "svhn" / "cache").exists() or not any(
        (tmp_path / "svhn" / "cache").iterdir())


def test_a_missing_png_in_the_archive_is_named(tmp_path):
    write_split(tmp_path, skip=("2.png",), archive=True)
    with pytest.raises(FileNotFoundError, match=r"train\.tar\.gz.*train/2\.png"):
        load_svhn_numbers("train", 64, tmp_path)


def test_missing_split_names_both_places(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"test/digitStruct\.mat.*test\.tar\.gz"):
        load_svhn_numbers("test", 64, tmp_path)


def test_a_truncated_digit_struct_is_named(tmp_path):
    write_split(tmp_path)
    path = tmp_path / "svhn" / "train" / "digitStruct.mat"
    path.write_bytes(path.read_bytes()[:700])
    with pytest.raises(ValueError, match="digitStruct.mat"):
        load_svhn_numbers("train", 64, tmp_path)


def test_a_digit_struct_of_another_layout_is_named(tmp_path):
    path = tmp_path / "digitStruct.mat"
    with h5py.File(path, "w") as f:
        f.create_dataset("something", data=np.zeros(3))
    with pytest.raises(ValueError, match="not the published digitStruct layout"):
        read_digit_struct(path)


def test_a_truncated_archive_is_named(tmp_path):
    write_split(tmp_path, archive=True)
    archive = tmp_path / "svhn" / "train.tar.gz"
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"train\.tar\.gz"):
        load_svhn_numbers("train", 64, tmp_path)


def test_a_corrupt_png_is_named(tmp_path):
    write_split(tmp_path)
    (tmp_path / "svhn" / "train" / "2.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="2.png: not a readable image"):
        load_svhn_numbers("train", 64, tmp_path)


def test_bad_labels_are_refused(tmp_path):
    write_split(tmp_path, entries=[("1.png", [(11, 1, 1, 3, 6)])])
    with pytest.raises(ValueError, match=r"1\.png has labels \[11\]"):
        load_svhn_numbers("train", 64, tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "valid"}, "split must be one of train, test, extra, got 'valid'"),
    ({"size": 54}, "size must be 64 .* or 128 .*, got 54"),
])
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_svhn_numbers(data_dir=tmp_path, **kwargs)


def _write_format2(path, x, y):
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy_io.savemat(path, {"X": x, "y": y})


def test_format2_digits(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    y = np.array([[10], [1], [2], [9], [10]], dtype=np.uint8)
    _write_format2(tmp_path / "svhn" / "test_32x32.mat", x, y)
    images, labels = load_svhn_digits("test", tmp_path)
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 1, 2, 9, 0]
    for n in range(5):  # image n, channel c, row i, column j is X[i, j, c, n]
        np.testing.assert_array_equal(images[n].numpy(), x[:, :, :, n].transpose(2, 0, 1))


def test_format2_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_32x32.mat"):
        load_svhn_digits("train", tmp_path)
    path = tmp_path / "svhn" / "train_32x32.mat"
    _write_format2(path, np.zeros((28, 28, 3, 2), np.uint8), np.ones((2, 1)))
    with pytest.raises(ValueError, match=r"X must be uint8 \(32, 32, 3, N\).*\(28, 28, 3, 2\)"):
        load_svhn_digits("train", tmp_path)
    _write_format2(path, np.zeros((32, 32, 3, 2), np.uint8), np.array([[0], [3]]))
    with pytest.raises(ValueError, match="labels must be 1 to 10"):
        load_svhn_digits("train", tmp_path)
    path.write_bytes(io.BytesIO(b"MATLAB 5.0 MAT-file junk").getvalue())
    with pytest.raises(ValueError, match="not a readable SVHN format-2"):
        load_svhn_digits("train", tmp_path)
