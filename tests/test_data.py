"""Tests for spikeforge.data (datasets, cache, loaders, restricted unpickling, config)."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import spikeforge.data as sd
from spikeforge.data import (
    DATASETS,
    DataConfig,
    DatasetInfo,
    TensorLoader,
    build_data,
    image_folder_loader,
    load_tensors,
    read_cifar,
    read_idx,
    register_dataset,
    resolve_cache_dir,
    resolve_data_dir,
)
from spikeforge.errors import ConfigError, DataError, SpikeforgeError

REPO = Path(__file__).resolve().parents[1]

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _shared_dir() -> Path:
    env = os.environ.get("SPIKEFORGE_DATA")
    return Path(os.path.abspath(env)) if env else (REPO.parent / "shared" / "datasets")


@pytest.fixture(scope="session")
def shared():
    d = _shared_dir()
    if not (d / "mnist").is_dir() or not (d / "fashion-mnist").is_dir():
        pytest.skip(f"shared datasets not found at {d} (set SPIKEFORGE_DATA)")
    return d


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Keep the parsed-tensor cache out of the home directory, shared across tests."""
    old = os.environ.get("SPIKEFORGE_CACHE")
    os.environ["SPIKEFORGE_CACHE"] = str(tmp_path_factory.mktemp("sfcache"))
    yield
    if old is None:
        os.environ.pop("SPIKEFORGE_CACHE", None)
    else:
        os.environ["SPIKEFORGE_CACHE"] = old


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A private cache dir for tests that must start with an empty cache."""
    d = tmp_path / "own_cache"
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(d))
    return d


# ------------------------------------------------------------------ table and directories


def test_dataset_table():
    assert set(DATASETS) == {"mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder",
                             "nmnist", "dvs-gesture", "cifar10-dvs", "shd", "mnist-saccade"}  # + the event sets
    assert {n for n, i in DATASETS.items() if i.kind == "events"} == {"nmnist", "dvs-gesture", "cifar10-dvs", "shd",
                                                                     "mnist-saccade"}
    m = DATASETS["mnist"]
    assert (m.num_classes, m.in_channels, m.image_size, m.mean, m.std, m.kind) == (
        10, 1, 28, (0.1307,), (0.3081,), "tensor")
    assert DATASETS["fashion-mnist"].mean == (0.2860,) and DATASETS["fashion-mnist"].std == (0.3530,)
    assert DATASETS["cifar10"].mean == (0.4914, 0.4822, 0.4465)
    assert DATASETS["cifar10"].std == (0.2470, 0.2435, 0.2616)
    assert DATASETS["cifar100"].num_classes == 100
    assert DATASETS["cifar100"].mean == (0.5071, 0.4865, 0.4409)
    assert DATASETS["cifar100"].std == (0.2673, 0.2564, 0.2762)
    f = DATASETS["imagefolder"]
    assert f.kind == "folder" and f.num_classes is None and f.image_size == 224
    assert f.mean == (0.485, 0.456, 0.406) and f.std == (0.229, 0.224, 0.225)
    for name, info in DATASETS.items():
        counts = (1, info.in_channels) if info.kind == "events" else (info.in_channels,)  # event counts: mean 0, std 1
        assert isinstance(info, DatasetInfo) and len(info.mean) == len(info.std) and len(info.mean) in counts
        assert info.name == name and (info.load is not None) == (info.kind == "tensor")
    with pytest.raises(Exception):
        m.num_classes = 3  # frozen


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPIKEFORGE_DATA", "rel/data")
    assert resolve_data_dir() == tmp_path / "rel" / "data"
    assert resolve_data_dir("explicit") == tmp_path / "explicit"
    assert resolve_data_dir(tmp_path / "p") == tmp_path / "p"
    monkeypatch.delenv("SPIKEFORGE_DATA")
    assert resolve_data_dir() == Path.home() / ".cache" / "spikeforge" / "data"
    monkeypatch.setenv("SPIKEFORGE_CACHE", "c")
    assert resolve_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SPIKEFORGE_CACHE")
    assert resolve_cache_dir() == Path.home() / ".cache" / "spikeforge"


# ------------------------------------------------------------------ MNIST / Fashion-MNIST


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("train", [True, False])
def test_load_shared(shared, name, train):
    x, y = load_tensors(name, shared, train=train, download=False)
    n = 60000 if train else 10000
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (n,) and y.dtype == torch.int64
    counts = torch.bincount(y, minlength=10).tolist()
    if name == "mnist":
        assert counts == (MNIST_TRAIN_COUNTS if train else MNIST_TEST_COUNTS)
        mean = x.float().mean().item() / 255
        assert abs(mean - (0.1307 if train else 0.1325)) < 1e-3
    else:
        assert counts == [n // 10] * 10


def test_env_var_is_used(shared, monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_DATA", str(shared))
    x, y = load_tensors("mnist", train=False, download=False)
    assert x.shape == (10000, 1, 28, 28)


def test_cache_reuse_and_rebuild(shared, own_cache, monkeypatch):
    x1, y1 = load_tensors("mnist", shared, train=False, download=False)
    cache = own_cache / "tensors" / "mnist-test.pt"
    assert cache.is_file()
    assert not list(cache.parent.glob("*.tmp"))

    def boom(*a, **k):
        raise AssertionError("parsed again instead of using the cache")

    monkeypatch.setattr(sd.idx, "read_idx", boom)  # the reader the IDX datasets call
    x2, y2 = load_tensors("mnist", shared, train=False, download=False)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    monkeypatch.undo()
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(own_cache))

    cache.write_bytes(b"this is not a torch file")  # corrupt cache -> rebuilt
    x3, y3 = load_tensors("mnist", shared, train=False, download=False)
    assert torch.equal(x1, x3) and torch.equal(y1, y3)
    obj = torch.load(cache, weights_only=True)
    assert torch.equal(obj["labels"], y1)


def test_unwritable_cache_only_warns(shared, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="SPIKEFORGE_CACHE"):
        x, _ = load_tensors("mnist", shared, train=False, download=False)
    assert x.shape[0] == 10000


def _copy_split(shared: Path, dest: Path, split="t10k", src="mnist"):
    dest.mkdir(parents=True, exist_ok=True)
    for kind in ("images-idx3", "labels-idx1"):
        shutil.copy(shared / src / f"{split}-{kind}-ubyte.gz", dest)


def test_torchvision_layout_gz_and_plain(shared, tmp_path, own_cache):
    ref_x, ref_y = load_tensors("fashion-mnist", shared, train=False, download=False)
    raw = tmp_path / "d1" / "FashionMNIST" / "raw"
    _copy_split(shared, raw, src="fashion-mnist")
    x, y = load_tensors("fashion-mnist", tmp_path / "d1", train=False, download=False)
    assert torch.equal(x, ref_x) and torch.equal(y, ref_y)

    raw2 = tmp_path / "d2" / "FashionMNIST" / "raw"  # decompressed only
    raw2.mkdir(parents=True)
    for f in raw.glob("*.gz"):
        (raw2 / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
    x, y = load_tensors("fashion-mnist", tmp_path / "d2", train=False, download=False)
    assert torch.equal(x, ref_x) and torch.equal(y, ref_y)


def test_truncated_gz_is_dataerror(shared, tmp_path, own_cache):
    _copy_split(shared, tmp_path / "mnist")
    f = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz") as e:
        load_tensors("mnist", tmp_path, train=False, download=False)
    assert "checksum" in str(e.value) or "corrupt" in str(e.value)


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def test_idx_validation(tmp_path, own_cache):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 9], dtype=np.uint8)
    img_f, lab_f = raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte"

    img_f.write_bytes(_idx_bytes(imgs, 0x803))
    lab_f.write_bytes(_idx_bytes(labels, 0x801))
    x, y = load_tensors("mnist", tmp_path, train=False, download=False)
    assert torch.equal(x[:, 0], torch.from_numpy(imgs)) and y.tolist() == [0, 1, 2, 3, 9]
    assert np.array_equal(read_idx(img_f), imgs)

    img_f.write_bytes(_idx_bytes(imgs, 0x803)[:-10])  # truncated payload
    with pytest.raises(DataError, match="truncated"):
        load_tensors("mnist", tmp_path, train=False, download=False)

    img_f.write_bytes(_idx_bytes(imgs, 0x801))  # wrong magic
    with pytest.raises(DataError, match="magic"):
        load_tensors("mnist", tmp_path, train=False, download=False)

    img_f.write_bytes(_idx_bytes(imgs, 0x803))
    lab_f.write_bytes(_idx_bytes(labels[:4], 0x801))  # count mismatch
    with pytest.raises(DataError, match="5 images but"):
        load_tensors("mnist", tmp_path, train=False, download=False)

    lab_f.write_bytes(_idx_bytes(np.array([0, 1, 2, 3, 12]), 0x801))  # bad label
    with pytest.raises(DataError, match="label 12"):
        load_tensors("mnist", tmp_path, train=False, download=False)


def test_missing_without_download(tmp_path, own_cache):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        load_tensors("mnist", missing, train=True, download=False)
    msg = str(e.value)
    assert str(missing) in msg and "SPIKEFORGE_DATA" in msg and "--data-dir" in msg
    assert "train-images-idx3-ubyte.gz" in msg
    assert not missing.exists()  # looking does not create anything


def test_failed_download_is_dataerror(tmp_path, own_cache, monkeypatch):
    import torchvision.datasets as tvd
    import torchvision.datasets.utils as tvu

    def offline(*a, **k):
        raise RuntimeError("network is unreachable")

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    with pytest.raises(DataError) as e:
        load_tensors("mnist", tmp_path / "d", train=False, download=True)
    msg = str(e.value)
    assert "network is unreachable" in msg and str(tmp_path / "d") in msg
    assert "SPIKEFORGE_DATA" in msg

    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="cifar-10-python.tar.gz") as e:
        load_tensors("cifar10", tmp_path / "d", train=True, download=True)
    assert "network is unreachable" in str(e.value)


def test_load_tensors_bad_name():
    with pytest.raises(ConfigError, match="cifar100"):
        load_tensors("svhn")
    with pytest.raises(ConfigError):
        load_tensors("imagefolder")


# ------------------------------------------------------------------ CIFAR (synthetic files)


def _cifar_rows(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _write_pickle(path: Path, obj, protocol=2):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)


def _py2_batch(data: np.ndarray, labels, label_key=b"labels") -> bytes:
    """A pickle byte-for-byte in the style Python 2's cPickle (protocol 2) wrote the original
    CIFAR batches: py2 ``str`` (BINSTRING) keys and payload, ``numpy.core.multiarray`` globals."""

    def sbs(b):  # SHORT_BINSTRING
        return b"U" + bytes([len(b)]) + b

    n, m = data.shape
    out = b"\x80\x02}(" + sbs(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
    out += b"K\x00\x85" + sbs(b"b") + b"\x87R"
    out += b"(K\x01M" + struct.pack("<H", n) + b"M" + struct.pack("<H", m) + b"\x86"
    out += b"cnumpy\ndtype\n" + sbs(b"u1") + b"K\x00K\x01\x87R"
    out += b"(K\x03" + sbs(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    out += b"\x89T" + struct.pack("<I", data.nbytes) + data.tobytes() + b"tb"
    out += sbs(label_key) + b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"eu."
    return out


def _make_cifar10(root: Path, n=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows, labels = [], []
    for i, fname in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = _cifar_rows(n, i)
        lab = [(i + j) % 10 for j in range(n)]
        if i % 3 == 0:  # data_batch_1, data_batch_4: exact original (Python 2) pickle style
            (folder / fname).write_bytes(_py2_batch(data, lab))
        else:  # Python 3 re-pickles, protocol 2 (bytes via _codecs.encode) and 4
            _write_pickle(folder / fname, {b"batch_label": b"x", b"data": data, b"labels": lab,
                                           b"filenames": [b"f"] * n}, protocol=4 if i % 2 else 2)
        rows.append(data)
        labels.append(lab)
    _write_pickle(folder / "batches.meta", {b"label_names": [b"a"] * 10})
    return folder, rows, labels


def test_cifar10_synthetic(tmp_path, own_cache):
    folder, rows, labels = _make_cifar10(tmp_path)
    x, y = load_tensors("cifar10", tmp_path, train=True, download=False)
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert y.tolist() == sum(labels[:5], [])
    r = rows[0][1]  # CIFAR rows are the R plane, then G, then B, each row-major 32x32
    for c, h, w in [(0, 0, 0), (1, 5, 7), (2, 31, 31)]:
        assert x[1, c, h, w].item() == r[c * 1024 + h * 32 + w]
    xt, yt = load_tensors("cifar10", tmp_path, train=False, download=False)
    assert xt.shape == (3, 3, 32, 32) and yt.tolist() == labels[5]
    assert torch.equal(xt.reshape(3, -1), torch.from_numpy(rows[5]))
    assert (own_cache / "tensors" / "cifar10-train.pt").is_file()


def test_cifar100_str_keys(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = _cifar_rows(4, 7)
    # str keys (a Python 3 re-pickle) must be accepted as well as bytes keys
    _write_pickle(folder / "train", {"data": data, "fine_labels": [0, 99, 5, 42],
                                     "coarse_labels": [0, 1, 2, 3]}, protocol=2)
    x, y = read_cifar(folder, "cifar100", train=True)
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 99, 5, 42]
    assert torch.equal(x.reshape(4, -1), torch.from_numpy(data))


@pytest.mark.parametrize(
    "obj, match",
    [
        ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, "3072"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"\[0, 9\]"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "'labels'"),
        ([1, 2, 3], "not a dict"),
    ],
)
def test_cifar_malformed(tmp_path, obj, match):
    folder = tmp_path / "c"
    folder.mkdir()
    _write_pickle(folder / "test_batch", obj)
    with pytest.raises(DataError, match=match):
        read_cifar(folder, "cifar10", train=False)


def test_cifar_truncated_and_missing(tmp_path, own_cache):
    folder = tmp_path / "c"
    folder.mkdir()
    _write_pickle(folder / "test_batch", {b"data": _cifar_rows(2, 0), b"labels": [0, 1]})
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:100])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_cifar(folder, "cifar10", train=False)
    with pytest.raises(DataError, match="data_batch_1"):
        read_cifar(folder, "cifar10", train=True)
    with pytest.raises(DataError) as e:
        load_tensors("cifar100", tmp_path / "none", train=True, download=False)
    assert "cifar-100-python" in str(e.value) and "SPIKEFORGE_DATA" in str(e.value)


def test_cifar_archive_checksum(tmp_path, own_cache):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(DataError, match="checksum mismatch.*cifar-10-python.tar.gz"):
        load_tensors("cifar10", tmp_path, train=True, download=False)


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("kind", ["system", "eval", "nested"])
def test_restricted_unpickler_refuses_code(tmp_path, kind):
    marker = tmp_path / "pwned"
    if kind == "system":
        payload = _Evil(os.system, f"touch {marker}")
    elif kind == "eval":
        payload = _Evil(eval, f"open({str(marker)!r}, 'w').close()")
    else:
        payload = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [_Evil(os.system, "true")]}
    folder = tmp_path / "c"
    folder.mkdir()
    _write_pickle(folder / "test_batch", payload)
    with pytest.raises(DataError, match="refusing to load"):
        read_cifar(folder, "cifar10", train=False)
    assert not marker.exists()


# ------------------------------------------------------------------ TensorLoader


def _synthetic(n=50, c=1, h=8, w=8):
    """Images whose first pixel encodes the sample index, labels = index % 7."""
    g = torch.Generator().manual_seed(123)
    x = torch.randint(1, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    y = torch.arange(n) % 7
    return x, y


def _collect(loader):
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


def test_tensorloader_basic():
    x, y = _synthetic(50)
    loader = TensorLoader(x, y, 16, shuffle=False)
    assert len(loader) == 4 and loader.dataset_size == 50 and loader.batch_size == 16
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [16, 16, 16, 2]
    xb, yb = batches[0]
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert xb.shape == (16, 1, 8, 8) and xb.min() >= 0 and xb.max() <= 1
    xa, ya = _collect(loader)
    assert torch.allclose(xa, x.float() / 255) and torch.equal(ya, y)  # in order, unchanged

    loader = TensorLoader(x, y, 16, shuffle=True, drop_last=True)
    assert len(loader) == 3 and len(list(loader)) == 3
    xs, ys = _collect(TensorLoader(x, y, 16, shuffle=True))
    idx = (xs[:, 0, 0, 0] * 255).round().long()
    assert sorted(idx.tolist()) == list(range(50))  # a permutation of the whole set
    assert torch.equal(ys, idx % 7)  # labels travel with their images
    assert not torch.equal(idx, torch.arange(50))


def test_tensorloader_epoch_determinism():
    x, y = _synthetic(64)
    aug = {"crop_padding": 2, "flip": True}
    a = TensorLoader(x, y, 10, shuffle=True, augment=aug, seed=5)
    a.set_epoch(3)
    e3 = _collect(a)
    list(a)  # advances to epoch 4 implicitly
    e5_first = _collect(a)  # epoch 5
    a.set_epoch(3)
    e3_again = _collect(a)
    assert torch.equal(e3[0], e3_again[0]) and torch.equal(e3[1], e3_again[1])
    b = TensorLoader(x, y, 10, shuffle=True, augment=aug, seed=5)  # fresh loader, same epoch
    b.set_epoch(3)
    assert torch.equal(_collect(b)[0], e3[0])
    b.set_epoch(5)
    assert torch.equal(_collect(b)[0], e5_first[0])
    b.set_epoch(4)
    assert not torch.equal(_collect(b)[1], e3[1])  # different epoch -> different order
    c = TensorLoader(x, y, 10, shuffle=True, augment=aug, seed=6)
    c.set_epoch(3)
    assert not torch.equal(_collect(c)[1], e3[1])  # different seed -> different order


def test_flip_is_exact():
    x, y = _synthetic(200, c=3)
    x[:, 0, 0, 0] = 0
    loader = TensorLoader(x, y, 64, shuffle=False, augment={"flip": True})
    out = _collect(loader)[0]
    ref = x.float() / 255
    same = (out == ref).flatten(1).all(1)
    flipped = (out == ref.flip(-1)).flatten(1).all(1)
    assert bool((same | flipped).all())
    assert 60 < int(flipped.sum()) < 140  # about half


def test_crop_is_shifted_window():
    x, y = _synthetic(40, c=2, h=6, w=7)
    p = 2
    loader = TensorLoader(x, y, 16, shuffle=False, augment={"crop_padding": p, "flip": True})
    out = (_collect(loader)[0] * 255).round().to(torch.uint8)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    changed = 0
    for i in range(len(x)):
        windows = [padded[i, :, dy:dy + 6, dx:dx + 7] for dy in range(2 * p + 1)
                   for dx in range(2 * p + 1)]
        assert any(torch.equal(out[i], wdw) or torch.equal(out[i], wdw.flip(-1))
                   for wdw in windows), i
        changed += not torch.equal(out[i], x[i])
    assert changed > 20  # augmentation really changes most images


def test_sharding():
    x, y = _synthetic(50)
    ws = 3
    shards = []
    for r in range(ws):
        ld = TensorLoader(x, y, 8, shuffle=True, seed=1, rank=r, world_size=ws)
        ld.set_epoch(2)
        xs, _ = _collect(ld)
        shards.append((xs[:, 0, 0, 0] * 255).round().long().tolist())
        assert len(ld) == 3
    assert all(len(s) == 17 for s in shards)  # ceil(50/3), padded
    assert set().union(*map(set, shards)) == set(range(50))
    assert sum(map(len, shards)) == 51 and len(set(sum(shards, []))) == 50  # 1 padded repeat

    x, y = _synthetic(48)  # divisible: exactly disjoint
    idx = []
    for r in range(4):
        ld = TensorLoader(x, y, 5, shuffle=True, rank=r, world_size=4)
        idx.append(set((_collect(ld)[0][:, 0, 0, 0] * 255).round().long().tolist()))
    assert all(len(s) == 12 for s in idx)
    assert set.union(*idx) == set(range(48)) and sum(map(len, idx)) == 48

    x, y = _synthetic(50)  # drop_last trims instead of padding
    ids = []
    for r in range(3):
        ld = TensorLoader(x, y, 4, shuffle=True, drop_last=True, rank=r, world_size=3)
        assert len(ld) == 4
        ids.append((_collect(ld)[0][:, 0, 0, 0] * 255).round().long().tolist())
    flat = sum(ids, [])
    assert len(flat) == len(set(flat)) == 48


def test_tensorloader_bad_args():
    x, y = _synthetic(10)
    with pytest.raises(ConfigError, match="batch_size"):
        TensorLoader(x, y, 0, shuffle=True)
    with pytest.raises(ConfigError, match="uint8"):
        TensorLoader(x.float(), y, 4, shuffle=True)
    with pytest.raises(ConfigError, match="labels"):
        TensorLoader(x, y[:5], 4, shuffle=True)
    with pytest.raises(ConfigError, match="rank"):
        TensorLoader(x, y, 4, shuffle=True, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="crop_padding"):
        TensorLoader(x, y, 4, shuffle=True, augment={"crop_padding": -1})
    with pytest.raises(ConfigError, match="allowed keys"):
        TensorLoader(x, y, 4, shuffle=True, augment={"rotate": 10})
    with pytest.raises(ConfigError, match="drop_last"):
        TensorLoader(x, y, 20, shuffle=True, drop_last=True)


# ------------------------------------------------------------------ ImageFolder


def _make_folder(root: Path, splits=("train", "val"), per_class=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                h, w = 20 + i * 3, 24 + i
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")


def test_image_folder_loader(tmp_path):
    _make_folder(tmp_path)
    train = image_folder_loader(tmp_path, train=True, image_size=16, batch_size=4, workers=0)
    assert isinstance(train, torch.utils.data.DataLoader)
    assert train.num_classes == 2 and train.classes == ["cat", "dog"] and train.dataset_size == 6
    xs, ys = _collect(train)
    assert xs.shape == (6, 3, 16, 16) and xs.dtype == torch.float32
    assert 0 <= xs.min() and xs.max() <= 1 and sorted(ys.tolist()) == [0, 0, 0, 1, 1, 1]
    test = image_folder_loader(tmp_path, train=False, image_size=16, batch_size=4, workers=0)
    xt, yt = _collect(test)
    assert xt.shape == (6, 3, 16, 16) and yt.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(_collect(test)[0], xt)  # deterministic eval transform
    train.set_epoch(1)
    o1 = _collect(train)[1]
    train.set_epoch(1)
    assert torch.equal(_collect(train)[1], o1)


def test_image_folder_missing_val(tmp_path):
    _make_folder(tmp_path, splits=("train",))
    with pytest.raises(DataError, match="val") as e:
        image_folder_loader(tmp_path, train=False, image_size=16, batch_size=2, workers=0)
    assert "train/ and val/" in str(e.value)
    with pytest.raises(DataError, match="val"):
        build_data(DataConfig(dataset="imagefolder", data_dir=str(tmp_path), workers=0))


def test_build_data_imagefolder(tmp_path):
    _make_folder(tmp_path)
    data = build_data(DataConfig(dataset="imagefolder", data_dir=str(tmp_path), image_size=16,
                                 batch_size=4, workers=0))
    assert data.info.num_classes == 2 and data.num_classes == 2 and data.info.image_size == 16
    assert DATASETS["imagefolder"].num_classes is None  # table untouched
    c = data.calibration_batch(4)
    assert c.shape == (4, 3, 16, 16) and torch.equal(c, data.calibration_batch(4))
    assert data.calibration_batch().shape[0] == 6  # all, set is smaller than 512


# ------------------------------------------------------------------ DataConfig / build_data


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"dataset": "svhn"}, "dataset"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"test_batch_size": -1}, "test_batch_size"),
        ({"calib_batch_size": 0}, "calib_batch_size"),
        ({"train_subset": 0}, "train_subset"),
        ({"test_subset": "10"}, "test_subset"),
        ({"image_size": 0}, "image_size"),
        ({"workers": -1}, "workers"),
        ({"augment": "yes"}, "augment"),
        ({"download": 1}, "download"),
        ({"data_dir": 3}, "data_dir"),
    ],
)
def test_dataconfig_validation(kwargs, field):
    with pytest.raises(ConfigError, match=f"DataConfig.{field}") as e:
        DataConfig(**kwargs)
    assert isinstance(e.value, SpikeforgeError)
    if field == "dataset":
        for name in DATASETS:
            assert name in str(e.value)


def test_dataconfig_aliases_and_from_dict():
    assert DataConfig(dataset="Fashion_MNIST").dataset == "fashion-mnist"
    assert DataConfig(dataset="CIFAR-10").dataset == "cifar10"
    assert DataConfig(dataset="fmnist").dataset == "fashion-mnist"
    cfg = DataConfig.from_dict({"dataset": "cifar100", "batch_size": 64})
    assert cfg.dataset == "cifar100" and cfg.batch_size == 64
    assert DataConfig.from_dict(None) == DataConfig()
    with pytest.raises(ConfigError, match="batchsize"):
        DataConfig.from_dict({"batchsize": 64})
    with pytest.raises(ConfigError, match=r"^data\.batch_size: .*greater than or equal to 1"):
        DataConfig.from_dict({"batch_size": 0})
    with pytest.raises(ConfigError, match=r"^data\.dataset: must be one of .*'mnist'.*got 'mnust'$"):
        DataConfig.from_dict({"dataset": "mnust"})
    assert DataConfig(data_dir=Path("/x/y")).data_dir == "/x/y"  # a path is kept as a string
    assert DataConfig(test_batch_size=None).test_batch_size is None  # null: same as batch_size
    cfg.dataset = "CIFAR_10"  # assignment is validated (and canonicalised) too
    assert cfg.dataset == "cifar10"
    with pytest.raises(ConfigError, match="DataConfig.workers"):
        cfg.workers = -1


def test_dataset_info_checks_its_hooks():
    with pytest.raises(ConfigError, match="needs a load function"):
        DatasetInfo("x", 2, 1, 4, (0.5,), (0.5,), "tensor")
    with pytest.raises(ConfigError, match="needs a build_loaders function"):
        DatasetInfo("x", 2, 1, 4, (0.5,), (0.5,), "folder")
    with pytest.raises(ConfigError, match="kind must be"):
        DatasetInfo("x", 2, 1, 4, (0.5,), (0.5,), "stream", load=lambda *a: None)
    with pytest.raises(ConfigError, match="one value per channel"):
        DatasetInfo("x", 2, 3, 4, (0.5,), (0.5,), "tensor", load=lambda *a: None)


@pytest.fixture
def toy_dataset(monkeypatch):
    """A dataset added the way a new dataset module adds one (register_dataset), removed afterwards."""
    calls = []

    def load(root, train, download):
        calls.append((root, train, download))
        n = 12 if train else 5
        x = (torch.arange(n * 16) % 256).to(torch.uint8).reshape(n, 1, 4, 4)
        return x, torch.arange(n) % 3

    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))  # restored after the test
    info = register_dataset(DatasetInfo("toy", 3, 1, 4, (0.5,), (0.25,), "tensor", augment_default=True,
                                        crop_padding=1, flip=True, aliases=("toy_set",), load=load))
    return info, calls


def test_new_dataset_is_one_registration(toy_dataset, tmp_path):
    info, calls = toy_dataset
    assert "toy" in DATASETS and DataConfig(dataset="Toy-Set").dataset == "toy"
    data = build_data(DataConfig(dataset="toy", data_dir=str(tmp_path), batch_size=4, test_batch_size=None))
    assert data.info is info and data.num_classes == 3
    assert (data.train.crop_padding, data.train.flip) == (1, True)  # the dataset's default augmentation
    assert data.test.batch_size == 4 and len(data.test) == 2 and data.train.dataset_size == 12
    assert calls == [(tmp_path, True, True), (tmp_path, False, True)]
    x, y = load_tensors("toy_set", tmp_path, train=False, download=False)
    assert x.shape == (5, 1, 4, 4) and y.tolist() == [0, 1, 2, 0, 1]
    with pytest.raises(ConfigError, match="'toy'"):
        DataConfig(dataset="svhn")  # the error lists the registered names


def test_build_data_mnist(shared):
    cfg = DataConfig(dataset="mnist", data_dir=str(shared), batch_size=100, test_batch_size=256,
                     train_subset=1000, test_subset=500, calib_batch_size=64, download=False)
    data = build_data(cfg, seed=3)
    assert data.info == DATASETS["mnist"]
    assert data.train.dataset_size == 1000 and len(data.train) == 10
    assert data.test.dataset_size == 500 and len(data.test) == 2
    assert data.train.crop_padding == 0 and not data.train.flip  # MNIST: no default augmentation
    xfull, yfull = load_tensors("mnist", shared, train=True, download=False)
    assert torch.equal(data.train.images, xfull[:1000])  # first N samples
    xt, yt = _collect(data.test)
    xtf, ytf = load_tensors("mnist", shared, train=False, download=False)
    assert torch.equal(yt, ytf[:500]) and torch.allclose(xt, xtf[:500].float() / 255)
    c = data.calibration_batch()
    assert c.shape == (64, 1, 28, 28) and c.dtype == torch.float32
    assert torch.equal(c, build_data(cfg, seed=3).calibration_batch())  # deterministic
    assert torch.equal(data.calibration_batch(16), c[:16])
    flat = (xfull[:1000].float() / 255).flatten(1)
    assert all(bool((flat == row).all(1).any()) for row in c[:8].flatten(1))  # unaugmented

    resized = build_data(DataConfig(dataset="mnist", data_dir=str(shared), train_subset=10,
                                    test_subset=10, image_size=32, download=False))
    assert resized.info.image_size == 32
    assert next(iter(resized.train))[0].shape[-2:] == (32, 32)


def test_build_data_cifar_default_augment(tmp_path, own_cache):
    _make_cifar10(tmp_path, n=4)
    data = build_data(DataConfig(dataset="cifar10", data_dir=str(tmp_path), batch_size=8,
                                 download=False), rank=1, world_size=2)
    assert (data.train.crop_padding, data.train.flip) == (4, True)
    assert (data.test.crop_padding, data.test.flip) == (0, False)
    assert data.train.samples_per_rank == 10 and len(data.train) == 2
    off = build_data(DataConfig(dataset="cifar10", data_dir=str(tmp_path), augment=False,
                                download=False))
    assert off.train.crop_padding == 0 and not off.train.flip
    assert off.calibration_batch(5).shape == (5, 3, 32, 32)
