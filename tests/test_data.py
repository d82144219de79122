"""The CIFAR-10 reader: the real on-disk format (a fixture written here), its errors, the
checksum-verified download (from a local file), shuffling, and published facts of the real
data set when it is present."""

import hashlib
import io
import os
import stat
import tarfile
import warnings

import numpy as np
import pytest

from meanfield.training import data
from tests.helpers import CIFAR10_CLASSES, write_cifar_folder


@pytest.fixture
def cifar(tmp_path):
    return write_cifar_folder(tmp_path / "d", per_batch=30, test=20)


def test_reads_the_real_format_exactly(cifar):
    folder, x, y, x_test, y_test = cifar
    d = data.load(folder.parent, download_missing=False)  # the parent folder works too
    assert d.x_train.shape == (150, 32, 32, 3) and d.x_train.dtype == np.uint8
    np.testing.assert_array_equal(d.x_train, x)
    np.testing.assert_array_equal(d.y_train, y)
    np.testing.assert_array_equal(d.x_test, x_test)
    np.testing.assert_array_equal(d.y_test, y_test)
    assert d.classes[:3] == ("airplane", "automobile", "bird")
    assert d.source == str(folder)


def test_sizes_take_the_first_images_across_batches(cifar):
    folder, x, y, x_test, _ = cifar
    d = data.load(folder, train_size=45, test_size=7, download_missing=False)
    np.testing.assert_array_equal(d.x_train, x[:45])  # spans data_batch_1 and data_batch_2
    np.testing.assert_array_equal(d.x_test, x_test[:7])
    with pytest.raises(ValueError, match=r"train_size must be <= 150 .* got 151"):
        data.load(folder, train_size=151, download_missing=False)
    with pytest.raises(ValueError, match="test_size must be an integer >= 1"):
        data.load(folder, test_size=0, download_missing=False)


def test_channel_statistics_match_a_float64_computation(cifar):
    folder, x, *_ = cifar
    d = data.load(folder, download_missing=False)
    v = x.astype(np.float64) / 255.0
    np.testing.assert_allclose(d.mean, v.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(d.std, v.std(axis=(0, 1, 2)), rtol=1e-12)
    z = np.asarray(data.normalize(x, d.mean, d.std), dtype=np.float64)
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1.0, rtol=1e-5)


def test_missing_folder_says_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(
        data.DataError,
        match=r"looked for cifar-10-batches-py/ in: .*nowhere.*"
        r"--data-dir or set CIFAR10_DIR",
    ):
        data.load(tmp_path / "nowhere", download_missing=False)


def test_truncated_batch_names_the_file(cifar):
    folder, *_ = cifar
    path = folder / "data_batch_1"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(data.DataError, match=r"data_batch_1 .*truncated or damaged"):
        data.load(folder, download_missing=False)


def test_batch_of_wrong_shape_is_rejected(tmp_path):
    import pickle

    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}, f, 2)
    with pytest.raises(data.DataError, match=r"must be uint8 of shape \(N, 3072\)"):
        data.read_batch(path)


def test_environment_variable_is_a_location(cifar, monkeypatch, tmp_path):
    folder, *_ = cifar
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CIFAR10_DIR", str(folder.parent))
    assert data.find() == folder


def _archive(folder, tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return path, hashlib.md5(path.read_bytes()).hexdigest()


def test_download_checks_the_checksum_and_unpacks(cifar, tmp_path):
    folder, x, *_ = cifar
    archive, md5 = _archive(folder, tmp_path)
    url = archive.as_uri()
    with pytest.raises(data.DataError, match="has MD5 .* expected 0+"):
        data.download(tmp_path / "bad", url=url, md5="0" * 32)
    assert not (tmp_path / "bad" / "cifar-10-batches-py").exists()  # nothing half-written
    got = data.download(tmp_path / "good", url=url, md5=md5)
    np.testing.assert_array_equal(data.load(got, download_missing=False).x_train, x)


def test_failed_download_says_what_to_do(tmp_path):
    url = (tmp_path / "absent.tar.gz").as_uri()
    with pytest.raises(data.DataError, match="could not download it from .*--data-dir"):
        data.download(tmp_path / "d", url=url)


def test_epoch_order_is_a_deterministic_permutation_per_seed_and_epoch():
    a = data.epoch_order(3, 1, 1000)
    np.testing.assert_array_equal(np.sort(a), np.arange(1000))
    np.testing.assert_array_equal(a, data.epoch_order(3, 1, 1000))
    assert not np.array_equal(a, data.epoch_order(4, 1, 1000))
    assert not np.array_equal(a, data.epoch_order(3, 2, 1000))


def _real_folder():
    found = data.find()
    if found is None or os.path.getsize(found / "data_batch_1") < 30_000_000:
        return None
    return found


@pytest.mark.skipif(_real_folder() is None, reason="the real CIFAR-10 is not present")
def test_real_cifar10_matches_its_published_facts():
    d = data.load(_real_folder(), train_size=10_000, download_missing=False)
    # Published facts of the original data set, not outputs of this reader.
    np.testing.assert_array_equal(d.y_train[:10], [6, 9, 9, 4, 1, 1, 2, 7, 8, 3])
    np.testing.assert_array_equal(d.y_test[:10], [3, 8, 8, 0, 6, 6, 1, 6, 3, 1])
    np.testing.assert_array_equal(
        np.bincount(d.y_train), [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]
    )
    np.testing.assert_array_equal(d.x_train[0, 0, :4, 0], [59, 43, 50, 68])  # red, row 0
    np.testing.assert_array_equal(d.x_test[0, 0, 0], [158, 112, 49])
    assert d.classes == CIFAR10_CLASSES
    full = data.load(_real_folder(), download_missing=False)
    np.testing.assert_allclose(full.mean, [0.4913996786, 0.4821584084, 0.4465309144], rtol=1e-9)
    np.testing.assert_allclose(full.std, [0.2470322325, 0.2434851280, 0.2615878417], rtol=1e-9)


def _tar_with(path, members):
    """A .tar.gz holding ``members``: (TarInfo, bytes or None) pairs."""
    with tarfile.open(path, "w:gz") as tar:
        for info, payload in members:
            if payload is not None:
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def _file(name, payload=b"x", mode=0o644):
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, payload


@pytest.mark.parametrize("name", ["../evil", "cifar-10-batches-py/../../evil", "/abs/evil"])
def test_a_member_escaping_the_folder_is_refused_and_nothing_is_written(tmp_path, name):
    archive = _tar_with(tmp_path / "a.tar.gz", [_file("cifar-10-batches-py/ok"), _file(name)])
    dest = tmp_path / "out" / "unpacked"
    with pytest.raises(data.DataError, match="refusing to unpack"):
        data._safe_extract(archive, dest)
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not (dest / "cifar-10-batches-py" / "ok").exists()  # checked before any write


def test_links_are_refused(tmp_path):
    link = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    link.type, link.linkname = tarfile.SYMTYPE, "/outside"
    archive = _tar_with(tmp_path / "a.tar.gz", [(link, None)])
    with pytest.raises(data.DataError, match="refusing to unpack"):
        data._safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "cifar-10-batches-py" / "data_batch_1").is_symlink()


def test_without_tarfiles_data_filter_the_own_checks_still_refuse(tmp_path, monkeypatch):
    # Python 3.11.0 to 3.11.3 have no tarfile.data_filter: the checks here must do the job.
    monkeypatch.delattr(tarfile, "data_filter")
    archive = _tar_with(tmp_path / "a.tar.gz", [_file("../evil")])
    with pytest.raises(data.DataError, match="refusing to unpack"):
        data._safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil").exists()


def test_unpacking_uses_the_data_filter_and_warns_nothing(cifar, tmp_path):
    folder, x, *_ = cifar
    archive, _ = _archive(folder, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Python 3.12+ warns when extractall names no filter
        data._safe_extract(archive, tmp_path / "out")
    got = data.load(tmp_path / "out", download_missing=False)
    np.testing.assert_array_equal(got.x_train, x)
    # The "data" filter drops setuid and group/other write bits that an archive asks for.
    risky = _tar_with(tmp_path / "r.tar.gz", [_file("cifar-10-batches-py/f", mode=0o4777)])
    data._safe_extract(risky, tmp_path / "risky")
    mode = stat.S_IMODE((tmp_path / "risky" / "cifar-10-batches-py" / "f").stat().st_mode)
    assert not mode & (stat.S_ISUID | stat.S_IWGRP | stat.S_IWOTH), oct(mode)


def _write_batch(path, n=2, seed=0):
    """A small batch in the on-disk format of tests.helpers.write_cifar_folder."""
    import pickle

    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    with open(path, "wb") as f:
        pickle.dump(
            {b"batch_label": b"training batch 1 of 5", b"labels": labels, b"data": rows}, f, 2
        )
    return rows, labels


class _Evil:
    """Unpickles as a call of ``func(*args)``: what a malicious batch file can ask for."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("how", ["os.system", "builtins.eval", "builtins.open"])
def test_a_pickle_that_calls_anything_else_is_refused_without_running_it(tmp_path, how):
    import builtins
    import pickle

    marker = tmp_path / "executed"
    evil = {
        "os.system": _Evil(os.system, f"touch '{marker}'"),
        "builtins.eval": _Evil(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "builtins.open": _Evil(builtins.open, str(marker), "w"),
    }[how]
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": evil, b"labels": [0]}, f, 2)
    with pytest.raises(data.DataError) as err:
        data.read_batch(path)
    assert not marker.exists(), "the pickle's call ran"
    assert "data_batch_1" in str(err.value) and "refusing global" in str(err.value)
    # batches.meta goes through the same reader.
    path.rename(tmp_path / "batches.meta")
    with pytest.raises(data.DataError) as err:
        data._read_classes(tmp_path)
    assert not marker.exists(), "the pickle's call ran"
    assert "batches.meta" in str(err.value) and "refusing global" in str(err.value)


@pytest.mark.parametrize(
    "payload",
    [
        np.zeros((2, 3072), dtype=object),  # object arrays carry arbitrary objects
        np.zeros(3, dtype=[("a", np.uint8)]),  # structured dtype
        np.float64(1.0),  # numpy scalars use another global
        bytearray(b"xyz"),
    ],
    ids=["object", "structured", "scalar", "bytearray"],
)
def test_only_plain_numeric_arrays_are_admitted(tmp_path, payload):
    import pickle

    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": payload, b"labels": [0, 1]}, f, 2)
    with pytest.raises(data.DataError, match="data_batch_1"):
        data.read_batch(path)


def test_corrupted_batches_give_only_the_readers_error(tmp_path):
    # Random damage must end in a valid read or DataError naming the file: never an import of
    # a garbled module name, a MemoryError, an OverflowError or any other exception.
    path = tmp_path / "data_batch_1"
    rows, labels = _write_batch(path)
    clean = path.read_bytes()
    payload = clean.find(rows.tobytes().decode("latin-1").encode("utf-8")[:16])
    rng = np.random.default_rng(1234)
    outcomes = {"read": 0, "refused": 0}
    for _ in range(200):
        blob = bytearray(clean)
        for _ in range(rng.integers(1, 4)):
            # Half the hits on the pickle's opcodes (outside the pixel bytes), half anywhere.
            if rng.random() < 0.5:
                pos = (
                    int(rng.integers(0, payload))
                    if rng.random() < 0.5
                    else -int(rng.integers(1, 80))
                )
            else:
                pos = int(rng.integers(0, len(blob)))
            blob[pos] = int(rng.integers(0, 256))
        path.write_bytes(bytes(blob))
        try:
            x, y = data.read_batch(path)
        except data.DataError as err:
            assert "data_batch_1" in str(err)
            outcomes["refused"] += 1
        else:
            assert x.dtype == np.uint8 and x.shape == (len(y), 32, 32, 3)
            assert y.dtype == np.int32 and np.all((0 <= y) & (y < 10))
            outcomes["read"] += 1
    assert outcomes["refused"] > 50, outcomes  # the damage did reach the structure


@pytest.mark.parametrize(
    "blob",
    [
        b"\x80\x02}r\xff\xff\xff\xff.",  # LONG_BINPUT 2**32 - 1: a memo of 32 GiB
        b"\x80\x02\x96\xff\xff\xff\xff\xff\xff\xff\x0f.",  # BYTEARRAY8 (protocol 5), damaged
        b"\x80\x02]q\x00(K\x01K\x02e\x8c\x04data\x94.",  # SHORT_BINUNICODE, MEMOIZE (4)
    ],
    ids=["memo-index", "bytearray8", "protocol-4"],
)
def test_damaged_lengths_and_later_protocols_are_refused_before_unpickling(tmp_path, blob):
    path = tmp_path / "data_batch_1"
    path.write_bytes(blob)
    with pytest.raises(data.DataError, match=r"data_batch_1 .*(refusing (memo|opcode)|bytearray8)"):
        data.read_batch(path)


def test_numpy_ndarray_is_never_called(tmp_path):
    # ndarray((10**9,)) would ask for 8 GB; a batch names ndarray only as _reconstruct's argument.
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02}(U\x04dataq\x00cnumpy\nndarray\nJ\x00\xca\x9a;\x85RU\x06labels]u.")
    with pytest.raises(data.DataError, match=r"data_batch_1 .*refusing to call numpy.ndarray"):
        data.read_batch(path)
