"""Event datasets: binning against hand-counted events, denoising (against Tonic's filter), the original-format
readers (files written here), the binned-frame cache and its invalidation, event augmentation and the mnist-saccade
simulator."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from spikeforge.data import DataConfig, EventLoader, EventStream, SaccadeOptions, bin_events, build_data
from spikeforge.data.events import Sensor, denoise, downsample, simulate_saccades
from spikeforge.data.events.augment import drop_events, time_jitter
import spikeforge.data.events.build as ev_build
from spikeforge.data.events.build import EVENT_SOURCES
from spikeforge.errors import ConfigError, DataError


def write_nmnist_bin(path: Path, x, y, t, p) -> None:
    """An N-MNIST ``.bin`` file: 40-bit records, x (8 bits), y (8 bits), polarity (1 bit) + timestamp (23 bits, us)."""
    x, y, t, p = (np.asarray(v, dtype=np.int64) for v in (x, y, t, p))
    rec = np.zeros((x.size, 5), dtype=np.uint8)
    rec[:, 0] = x
    rec[:, 1] = y
    rec[:, 2] = (p << 7) | ((t >> 16) & 0x7F)
    rec[:, 3] = (t >> 8) & 0xFF
    rec[:, 4] = t & 0xFF
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rec.tobytes())


def random_events(rng, n: int, width: int, height: int, duration_us: int = 300_000):
    t = np.sort(rng.integers(0, duration_us, n))
    return rng.integers(0, width, n), rng.integers(0, height, n), t, rng.integers(0, 2, n)


def write_nmnist(root: Path, per_class: int = 2, classes=range(10), seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split in ("Train", "Test"):
        for c in classes:
            for i in range(per_class):
                x, y, t, p = random_events(rng, 200 + 10 * c, 34, 34)
                write_nmnist_bin(root / "NMNIST" / split / str(c) / f"{i:05d}.bin", x, y, t, p)


def write_gesture(root: Path, per_class: int = 1, classes=range(11), seed: int = 0) -> None:
    """DVS128 Gesture as Tonic's release: ``ibmGesture{Train,Test}/user<NN>_<lighting>/<label>.npy`` holding
    ``[x, y, p, t in ms]`` rows."""
    rng = np.random.default_rng(seed)
    for split in ("ibmGestureTrain", "ibmGestureTest"):
        for u in range(per_class):
            for c in classes:
                x, y, t, p = random_events(rng, 500, 128, 128, 1_000_000)
                d = root / "DVSGesture" / split / f"user{u + 1:02d}_fluorescent"
                d.mkdir(parents=True, exist_ok=True)
                np.save(d / f"{c}.npy", np.stack([x, y, p, t // 1000], axis=1).astype(np.int64))


def write_aedat2(path: Path, x, y, t, p) -> None:
    """An AER-DAT 2.0 file (the CIFAR10-DVS release): header lines, then big-endian (address, timestamp) uint32
    pairs, DVS128 address ``x << 8 | y << 1 | p``."""
    addr = (np.asarray(x, dtype=np.uint32) << 8) | (np.asarray(y, dtype=np.uint32) << 1) | np.asarray(p, np.uint32)
    body = np.empty(addr.size * 2, dtype=">u4")
    body[0::2] = addr
    body[1::2] = np.asarray(t, dtype=np.uint32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n" + body.tobytes())


def write_cifar10_dvs(root: Path, per_class: int = 10, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    for name in names:
        for i in range(per_class):
            x, y, t, p = random_events(rng, 400, 128, 128, 1_000_000)
            write_aedat2(root / "CIFAR10DVS" / name / f"cifar10_{name}_{i}.aedat", x, y, t, p)


def write_shd(root: Path, n: int = 20, seed: int = 0) -> None:
    """SHD HDF5 files: ``spikes/times`` (s, variable length), ``spikes/units``, ``labels``."""
    import h5py

    rng = np.random.default_rng(seed)
    (root / "SHD").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        with h5py.File(root / "SHD" / f"shd_{split}.h5", "w") as f:
            vf = h5py.vlen_dtype(np.dtype("float32"))
            vu = h5py.vlen_dtype(np.dtype("uint16"))
            times = f.create_dataset("spikes/times", (n,), dtype=vf)
            units = f.create_dataset("spikes/units", (n,), dtype=vu)
            for i in range(n):
                k = int(rng.integers(50, 300))
                times[i] = np.sort(rng.uniform(0, 1.0, k)).astype(np.float32)
                units[i] = rng.integers(0, 700, k).astype(np.uint16)
            f.create_dataset("labels", data=(np.arange(n) % 20).astype(np.uint8))



def write_mnist_idx(root: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> None:
    """Tiny MNIST IDX files (random strokes) under ``root/mnist`` (for mnist-saccade without the real set)."""
    rng = np.random.default_rng(seed)
    (root / "mnist").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        for i in range(n):
            r = 6 + i % 10
            images[i, r:r + 10, 8 + i % 10: 12 + i % 10] = 255
        labels = (np.arange(n) % 10).astype(np.uint8)
        head_i = (0x803).to_bytes(4, "big") + b"".join(v.to_bytes(4, "big") for v in (n, 28, 28))
        head_l = (0x801).to_bytes(4, "big") + n.to_bytes(4, "big")
        with gzip.open(root / "mnist" / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(head_i + images.tobytes())
        with gzip.open(root / "mnist" / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(head_l + labels.tobytes())
    del rng


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache directory for the binned frames."""
    d = tmp_path / "cache"
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(d))
    return d


def _stream(samples):
    return EventStream.from_samples([{k: np.asarray(v) for k, v in s.items()} for s in samples])


# -- binning -----------------------------------------------------------------------------------------------------
HAND = [  # two samples on a 3 x 2 sensor
    {"x": [0, 1, 2, 0, 2, 1], "y": [0, 0, 1, 1, 1, 0], "t": [100, 150, 200, 400, 499, 500], "p": [1, 0, 1, 1, 0, 1]},
    {"x": [2, 2, 0], "y": [1, 1, 0], "t": [10, 11, 12], "p": [0, 0, 1]},
]
SENSOR = Sensor(3, 2, 2)


def test_bin_by_time_hand_counted():
    f = bin_events(_stream(HAND), 2, SENSOR, by="time")
    assert f.shape == (2, 2, 2, 2, 3) and f.dtype == np.uint8
    # sample 0: t0=100, t1=500, span 401 -> bin = (t - 100) * 2 // 401: 100,150,200 -> 0; 400,499,500 -> 1
    want = np.zeros((2, 2, 2, 3), dtype=np.uint8)  # [T, P, H, W]
    want[0, 1, 0, 0] = 1   # (x0, y0, ON) at t=100
    want[0, 0, 0, 1] = 1   # (x1, y0, OFF) at 150
    want[0, 1, 1, 2] = 1   # (x2, y1, ON) at 200
    want[1, 1, 1, 0] = 1   # (x0, y1, ON) at 400
    want[1, 0, 1, 2] = 1   # (x2, y1, OFF) at 499
    want[1, 1, 0, 1] = 1   # (x1, y0, ON) at 500
    np.testing.assert_array_equal(f[0], want)
    # sample 1: t 10, 11, 12, span 3 -> bins 0, 0, 1; the two OFF events at (2, 1) add up
    want1 = np.zeros_like(want)
    want1[0, 0, 1, 2] = 2
    want1[1, 1, 0, 0] = 1
    np.testing.assert_array_equal(f[1], want1)


def test_bin_by_count_and_window_hand_counted():
    ev = _stream(HAND)
    f = bin_events(ev, 3, SENSOR, by="count")
    # sample 0: 6 events -> 2 per bin in time order; sample 1: 3 events -> one per bin
    assert f[0].sum(axis=(1, 2, 3)).tolist() == [2, 2, 2]
    assert f[1].sum(axis=(1, 2, 3)).tolist() == [1, 1, 1]
    assert f[0, 2, 1, 0, 1] == 1 and f[0, 2, 0, 1, 2] == 1  # the last two events: (1,0,ON)@500, (2,1,OFF)@499
    w = bin_events(ev, 2, SENSOR, by="window", window_us=100)
    # sample 0 from t0=100: [100, 200) -> 2 events, [200, 300) -> 1 event, later ones dropped
    assert w[0].sum(axis=(1, 2, 3)).tolist() == [2, 1]
    assert w[1].sum(axis=(1, 2, 3)).tolist() == [3, 0]


def test_merge_polarity_1d_sensor_and_saturation():
    ev = _stream(HAND)
    m = bin_events(ev, 1, SENSOR, by="time", merge_polarity=True)
    assert m.shape == (2, 1, 1, 2, 3) and m[1, 0, 0, 1, 2] == 2 and int(m.sum()) == 9
    one_d = EventStream.from_samples([{"x": np.array([3, 3, 699]), "t": np.array([0.0, 0.5, 1.0])}],
                                     fields=("x", None, "t", None), time_scale=1e6)
    f = bin_events(one_d, 2, Sensor(700, 1, 1))
    assert f.shape == (1, 2, 700) and f[0, 0, 3] == 2 and f[0, 1, 699] == 1
    many = _stream([{"x": [0] * 300, "y": [0] * 300, "t": list(range(300)), "p": [1] * 300}])
    assert bin_events(many, 1, SENSOR)[0, 0, 1, 0, 0] == 255  # counts saturate at 255 (uint8)


def test_bin_rejects_bad_arguments():
    with pytest.raises(ConfigError):
        bin_events(_stream(HAND), 0, SENSOR)
    with pytest.raises(ConfigError, match="bin_by"):
        bin_events(_stream(HAND), 2, SENSOR, by="space")


def test_denoise_hand_and_against_tonic():
    ev = _stream([{"x": [5, 6, 9, 5, 20], "y": [5, 5, 9, 6, 20], "t": [1000, 1500, 1600, 30000, 30001],
                   "p": [1, 1, 0, 0, 1]}])
    kept = denoise(ev, Sensor(32, 32, 2), 1000)
    # (6,5)@1500 has its neighbour (5,5)@1000 500 us before -> kept; (5,5)@1000 has no earlier neighbour; (9,9) and
    # (20,20) are isolated; (5,6)@30000: neighbour (5,5) fired 29 ms before -> dropped
    assert kept.x.tolist() == [6] and kept.t.tolist() == [1500]
    tonic = pytest.importorskip("tonic")
    from tonic.functional.denoise import denoise_numpy

    rng = np.random.default_rng(1)
    n = 3000
    x, y = rng.integers(0, 16, n), rng.integers(0, 16, n)
    t = np.sort(rng.integers(5000, 200_000, n))
    p = rng.integers(0, 2, n)
    ours = denoise(_stream([{"x": x, "y": y, "t": t, "p": p}]), Sensor(16, 16, 2), 3000)
    struct = np.zeros(n, dtype=[("x", int), ("y", int), ("t", int), ("p", int)])
    struct["x"], struct["y"], struct["t"], struct["p"] = x, y, t, p
    theirs = denoise_numpy(struct, filter_time=3000)  # all t >= filter_time: Tonic's start-up memory plays no part
    assert ours.t.size == theirs.size and 0 < ours.t.size < n
    np.testing.assert_array_equal(ours.x, theirs["x"])
    np.testing.assert_array_equal(ours.t, theirs["t"])
    del tonic


def test_downsample_adds_blocks():
    ev = _stream([{"x": [0, 1, 2, 3], "y": [0, 1, 0, 3], "t": [0, 1, 2, 3], "p": [1, 1, 1, 1]}])
    small, sensor = downsample(ev, Sensor(4, 4, 2), 2)
    assert sensor == Sensor(2, 2, 2)
    f = bin_events(small, 1, sensor)
    assert f[0, 0, 1].tolist() == [[2, 1], [0, 1]]


# -- readers, cache ----------------------------------------------------------------------------------------------
def test_nmnist_bin_format_matches_hand_binning(tmp_path, cache):
    pytest.importorskip("tonic")
    write_nmnist(tmp_path, per_class=1)
    x, y, t, p = [3, 33, 7], [4, 0, 7], [10, 8_388_000, 150_000], [1, 0, 1]  # a 23-bit timestamp near its limit
    write_nmnist_bin(tmp_path / "NMNIST" / "Train" / "3" / "00000.bin", x, y, t, p)
    files = EVENT_SOURCES["nmnist"].locate(tmp_path, True, False)
    assert len(files) == 10 and files[3].parent.name == "3"
    stream, labels = next(iter(EVENT_SOURCES["nmnist"].read(files, True, DataConfig().events)))
    s = stream.sample(3)
    assert s["x"].tolist() == [3, 7, 33] and s["t"].tolist() == [10, 150_000, 8_388_000] and labels[3] == 3
    data = build_data(DataConfig.from_dict({"dataset": "nmnist", "timesteps": 4, "data_dir": str(tmp_path),
                                            "batch_size": 4, "test_batch_size": 4, "download": False}))
    assert data.train.frames.shape == (10, 4, 2, 34, 34) and data.test.frames.shape == (10, 4, 2, 34, 34)
    f = data.train.frames[3]
    assert int(f.sum()) == 3 and f[0, 1, 4, 3] == 1 and f[3, 0, 0, 33] == 1 and f[0, 1, 7, 7] == 1
    x0, y0 = next(iter(data.test))
    assert x0.dtype == torch.float32 and x0.shape == (4, 4, 2, 34, 34) and y0.tolist() == [0, 1, 2, 3]
    calib = data.calibration_batch(3)
    assert calib.shape == (3, 4, 2, 34, 34) and float(calib.max()) >= 1.0  # counts, not divided by 255


def test_cache_reused_and_invalidated(tmp_path, cache, monkeypatch):
    pytest.importorskip("tonic")
    write_nmnist(tmp_path, per_class=1)
    cfg = {"dataset": "nmnist", "timesteps": 3, "data_dir": str(tmp_path), "download": False}
    first = build_data(DataConfig.from_dict(cfg)).train.frames.clone()
    files = sorted((cache / "events").glob("nmnist-*.pt"))
    assert len(files) == 2
    calls = []
    real = ev_build._bin_chunks
    monkeypatch.setattr(ev_build, "_bin_chunks", lambda *a, **k: calls.append(a[3].binning_key()) or real(*a, **k))
    again = build_data(DataConfig.from_dict(cfg)).train.frames
    assert calls == [] and torch.equal(first, again)  # served from the cache
    for change in ({"bin_by": "count"}, {"denoise_us": 5000.0}, {"downsample": 2}, {"merge_polarity": True}):
        calls.clear()
        build_data(DataConfig.from_dict({**cfg, "events": change}))
        assert len(calls) == 2, change  # a binning option changes the key: both splits rebuilt
    calls.clear()
    build_data(DataConfig.from_dict({**cfg, "timesteps": 4}))
    assert len(calls) == 2
    calls.clear()
    build_data(DataConfig.from_dict({**cfg, "events": {"drop_events": 0.2}}))
    assert calls == []  # augmentation is applied after the cache
    write_nmnist_bin(tmp_path / "NMNIST" / "Train" / "0" / "00000.bin", [1], [1], [5], [1])  # a source changed
    calls.clear()
    build_data(DataConfig.from_dict(cfg))
    assert len(calls) == 1  # only the training split's files changed
    (cache / "events").joinpath(files[0].name).write_bytes(b"garbage")
    build_data(DataConfig.from_dict(cfg))  # a corrupt cache file is rebuilt


def test_missing_data_one_line_error(tmp_path, cache):
    with pytest.raises(DataError) as e:
        build_data(DataConfig.from_dict({"dataset": "nmnist", "data_dir": str(tmp_path), "download": False}))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "NMNIST") in msg and "SPIKEFORGE_DATA" in msg and "Train" in msg
    for name, folder in (("dvs-gesture", "DVSGesture"), ("cifar10-dvs", "CIFAR10DVS"), ("shd", "SHD")):
        with pytest.raises(DataError, match=folder):
            build_data(DataConfig.from_dict({"dataset": name, "data_dir": str(tmp_path), "download": False}))


def test_gesture_cifar_shd_readers(tmp_path, cache):
    pytest.importorskip("tonic")
    pytest.importorskip("h5py")
    write_gesture(tmp_path)
    write_cifar10_dvs(tmp_path, per_class=10)
    write_shd(tmp_path, n=20)
    g = build_data(DataConfig.from_dict({"dataset": "dvs-gesture", "timesteps": 5, "data_dir": str(tmp_path),
                                         "download": False, "events": {"downsample": 4}}))
    assert g.train.frames.shape == (11, 5, 2, 32, 32) and g.info.image_size == 32 and g.info.num_classes == 11
    assert int(g.train.frames.sum()) == 11 * 500 and sorted(g.train.labels.tolist()) == list(range(11))
    c = build_data(DataConfig.from_dict({"dataset": "cifar10-dvs", "timesteps": 2, "data_dir": str(tmp_path),
                                         "download": False}))
    assert c.train.frames.shape == (90, 2, 2, 128, 128) and c.test.frames.shape == (10, 2, 2, 128, 128)
    assert int(c.test.frames[0].sum()) == 400 and c.test.labels.tolist() == list(range(10))
    s = build_data(DataConfig.from_dict({"dataset": "shd", "timesteps": 4, "data_dir": str(tmp_path),
                                         "download": False}))
    assert s.train.frames.shape == (20, 4, 700) and s.info.in_channels == 700 and s.info.image_size == 1
    with pytest.raises(ConfigError, match="1-D"):
        next(iter(EventLoader(s.train.frames, s.train.labels, 4, shuffle=True, augment={"flip": True})))


def test_aedat_reader_matches_written_events(tmp_path):
    pytest.importorskip("tonic")
    from spikeforge.data.events.readers import read_aedat_dvs128

    write_aedat2(tmp_path / "a.aedat", [0, 127, 5], [9, 3, 127], [7, 8, 1 << 30], [1, 0, 1])
    ev = read_aedat_dvs128(tmp_path / "a.aedat")
    assert ev["x"].tolist() == [0, 127, 5] and ev["y"].tolist() == [9, 3, 127] and ev["p"].tolist() == [1, 0, 1]
    assert ev["t"].tolist() == [7, 8, 1 << 30]
    (tmp_path / "b.aedat").write_bytes(b"no header")
    with pytest.raises(DataError, match="b.aedat"):
        read_aedat_dvs128(tmp_path / "b.aedat")


def test_data_config_refusals():
    with pytest.raises(ConfigError, match="image dataset"):
        DataConfig.from_dict({"dataset": "mnist", "timesteps": 5})
    with pytest.raises(ConfigError, match="window_us"):
        DataConfig.from_dict({"dataset": "nmnist", "events": {"bin_by": "window"}})
    with pytest.raises(ConfigError, match="data.events"):
        DataConfig.from_dict({"dataset": "nmnist", "events": {"bogus": 1}})


# -- augmentation ------------------------------------------------------------------------------------------------
def test_event_augmentation():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 6, (8, 5, 2, 6, 6), generator=g).to(torch.uint8)
    dropped = drop_events(x, 0.5, torch.Generator().manual_seed(1))
    assert (dropped <= x).all() and 0.4 < dropped.sum().item() / x.sum().item() < 0.6
    assert torch.equal(drop_events(x, 0.0, g), x)
    jit = time_jitter(x, 0.5, torch.Generator().manual_seed(2))
    assert jit.sum(1).equal(x.sum(1))  # events move in time only: per-pixel totals are kept
    assert not torch.equal(jit, x)
    frames = torch.randint(0, 3, (20, 4, 2, 6, 6), generator=g).to(torch.uint8)
    labels = torch.arange(20) % 10
    aug = {"crop_padding": 1, "flip": True, "time_jitter": 0.2, "drop_events": 0.1}
    a = [b for b, _ in EventLoader(frames, labels, 8, shuffle=True, augment=aug, seed=3)]
    b = [b for b, _ in EventLoader(frames, labels, 8, shuffle=True, augment=aug, seed=3)]
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and a[0].shape == (8, 4, 2, 6, 6)
    with pytest.raises(ConfigError, match="unknown event augment"):
        EventLoader(frames, labels, 8, shuffle=True, augment={"rotate": 1})


# -- mnist-saccade -----------------------------------------------------------------------------------------------
def test_saccade_simulator():
    digits = np.zeros((3, 28, 28), dtype=np.uint8)
    digits[0, 10:18, 12:14] = 255  # a vertical bar
    digits[1, 12:14, 6:22] = 255   # a horizontal bar
    opts = SaccadeOptions()
    ev = simulate_saccades(digits, opts)
    again = simulate_saccades(digits, opts)
    assert np.array_equal(ev.t, again.t) and np.array_equal(ev.x, again.x)  # deterministic
    counts = ev.counts
    assert counts[0] > 50 and counts[1] > 50 and counts[2] == 0  # a blank image emits nothing without noise
    s = ev.sample(0)
    assert s["x"].min() >= 0 and s["x"].max() < 34 and s["y"].max() < 34 and (np.diff(s["t"]) >= 0).all()
    assert 0 < s["t"].min() and s["t"].max() <= 300_000
    assert 0.3 < s["p"].mean() < 0.7  # ON and OFF edges in about equal numbers
    # saccade 3 is horizontal (dy = 0): the horizontal bar's long edges are parallel to it and emit (almost) nothing
    hb = ev.sample(1)
    third = hb["t"] > 200_000
    assert third.sum() < 0.2 * (hb["t"] <= 100_000).sum()
    noisy = simulate_saccades(digits, SaccadeOptions(noise_hz=50.0))
    assert noisy.counts[2] > 0  # background events
    high = simulate_saccades(digits, SaccadeOptions(contrast=1.0))
    assert high.counts[0] < counts[0]  # a higher contrast threshold gives fewer events


def test_mnist_saccade_dataset(tmp_path, cache):
    write_mnist_idx(tmp_path, 30, 10)
    cfg = {"dataset": "mnist-saccade", "timesteps": 6, "data_dir": str(tmp_path), "download": False}
    d = build_data(DataConfig.from_dict(cfg))
    assert d.train.frames.shape == (30, 6, 2, 34, 34) and d.test.labels.tolist() == list(range(10))
    assert int(d.train.frames[0].sum()) > 0
    other = build_data(DataConfig.from_dict({**cfg, "events": {"saccade": {"contrast": 0.8}}}))
    assert not torch.equal(other.train.frames, d.train.frames)  # simulator settings are part of the cache key
    assert len(list((cache / "events").glob("mnist-saccade-*.pt"))) == 4
