import gzip
import hashlib

import numpy as np
import pytest

from torchstn.experiments.data import load_idx_dataset, read_idx, resolve_data_dir


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_read_idx_plain_and_gzipped(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "plain").write_bytes(_idx_bytes(a))
    (tmp_path / "packed.gz").write_bytes(gzip.compress(_idx_bytes(a)))
    np.testing.assert_array_equal(read_idx(tmp_path / "plain"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "packed.gz"), a)


def test_read_idx_errors_name_the_file(tmp_path):
    a = np.zeros((2, 3, 4), dtype=np.uint8)
    bad_magic = tmp_path / "bad-magic"
    bad_magic.write_bytes(b"\x01\x02" + _idx_bytes(a)[2:])
    with pytest.raises(ValueError, match=f"{bad_magic}: not an IDX file \\(bad magic number 0102"):
        read_idx(bad_magic)
    short = tmp_path / "short"
    short.write_bytes(_idx_bytes(a)[:-5])
    with pytest.raises(ValueError, match=f"{short}: header says shape \\(2, 3, 4\\) \\(24 data bytes\\) but the file holds 19"):
        read_idx(short)
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(gzip.compress(_idx_bytes(a))[:-10])
    with pytest.raises(ValueError, match=f"{truncated}: cannot read IDX file"):
        read_idx(truncated)
    with pytest.raises(ValueError, match="empty"):
        (tmp_path / "empty").write_bytes(b"")
        read_idx(tmp_path / "empty")


def test_mismatched_label_count_names_the_file(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((3, 2, 2))))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.zeros(4))))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: expected 3 labels"):
        load_idx_dataset("mnist", "test", tmp_path, verify=False)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte: checksum mismatch"):
        load_idx_dataset("mnist", "test", tmp_path)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte\\[.gz\\] not found"):
        load_idx_dataset("mnist", "train", tmp_path)
    with pytest.raises(ValueError, match="dataset must be one of \\['mnist', 'fashion-mnist'\\], got 'emnist'"):
        load_idx_dataset("emnist", "test", tmp_path)


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHSTN_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("TORCHSTN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir() == tmp_path / "cache" / "torchstn"


def test_real_mnist_test_split(data_dir):
    images, labels = load_idx_dataset("mnist", "test", data_dir)
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    # The decompressed IDX bytes have a published checksum (shared/datasets/README.md).
    raw = gzip.decompress((data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert hashlib.sha256(raw).hexdigest().startswith("ff7bcfd416de33731a308c3f266cc351")
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]


def _fake_mirrors(monkeypatch, dataset, *, corrupt_first_mirror=False, all_bad=False):
    """Serve the real test split (from the shared data folder) as if from the mirrors."""
    import torchstn.experiments.data.idx as idx

    calls = []

    def fetch(url):
        calls.append(url)
        if all_bad:
            raise OSError("network is unreachable")
        stem = url.rsplit("/", 1)[1].removesuffix(".gz")
        good = gzip.compress(_payload[stem])
        if corrupt_first_mirror and url.startswith(idx.MIRRORS[dataset][0]):
            return good[:-40]  # truncated in transit
        return good

    # Small stand-in files with the checksums the fake mirror serves.
    _payload = {
        stem: _idx_bytes(np.full((2, 2, 2) if "images" in stem else (2,), i))
        for i, stem in enumerate(idx.SHA256[dataset])
    }
    digests = {stem: hashlib.sha256(raw).hexdigest() for stem, raw in _payload.items()}
    monkeypatch.setitem(idx.SHA256, dataset, digests)
    monkeypatch.setattr(idx, "_fetch", fetch)
    return calls


def test_download_verifies_and_falls_back_to_the_next_mirror(monkeypatch, tmp_path):
    from torchstn.experiments.data import download

    calls = _fake_mirrors(monkeypatch, "mnist", corrupt_first_mirror=True)
    folder = download("mnist", tmp_path)
    assert folder == tmp_path / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert len(calls) == 8  # each file: first mirror (truncated), then the second
    images, labels = load_idx_dataset("mnist", "test", tmp_path)
    assert images.shape == (2, 2, 2) and labels.tolist() == [1, 1]
    calls.clear()
    download("mnist", tmp_path)  # everything present: no network at all
    assert calls == []


def test_failed_download_leaves_nothing_behind(monkeypatch, tmp_path):
    _fake_mirrors(monkeypatch, "fashion-mnist", all_bad=True)
    with pytest.raises(OSError, match="could not download t10k-images-idx3-ubyte.gz for fashion-mnist: .*network is unreachable"):
        load_idx_dataset("fashion-mnist", "test", tmp_path, download_missing=True)
    assert not (tmp_path / "fashion-mnist").exists() or not any((tmp_path / "fashion-mnist").iterdir())


def test_download_with_wrong_checksum_is_refused(monkeypatch, tmp_path):
    import torchstn.experiments.data.idx as idx

    _fake_mirrors(monkeypatch, "mnist")
    monkeypatch.setitem(idx.SHA256["mnist"], "t10k-labels-idx1-ubyte", "0" * 64)
    with pytest.raises(OSError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        idx.download("mnist", tmp_path)
    assert not (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not [p for p in (tmp_path / "mnist").iterdir() if p.name.startswith(".")]
