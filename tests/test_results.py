import json
import math
import os
import stat

import numpy as np
import pytest

from meanfield.io import results


def test_json_round_trip_with_arrays_and_non_finite(tmp_path):
    payload = {
        "a": np.arange(3),
        "b": np.float32(0.5),
        "c": [math.nan, math.inf, 1.0],
        "d": {"e": np.array([[1.0, np.nan]])},
    }
    path = results.save_json(tmp_path / "sub" / "r.json", payload)
    assert results.load_json(path) == {
        "a": [0, 1, 2],
        "b": 0.5,
        "c": [None, None, 1.0],
        "d": {"e": [[1.0, None]]},
    }
    assert not list(path.parent.glob(".*.tmp"))


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = results.save_json(tmp_path / "r.json", {"version": 1})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        results.save_json(path, {"version": 2})
    assert json.loads(path.read_text()) == {"version": 1}
    assert not list(tmp_path.glob(".*.tmp"))


def test_csv_and_environment(tmp_path):
    path = results.save_csv(tmp_path / "t.csv", [{"x": 1, "y": np.nan}, {"x": 2, "y": 3.5}])
    assert path.read_text().splitlines() == ["x,y", "1,", "2,3.5"]
    with pytest.raises(ValueError, match="rows must not be empty"):
        results.save_csv(tmp_path / "e.csv", [])
    env = results.environment()
    assert env["packages"]["numpy"] == np.__version__ and env["python"]


def test_new_run_dir_is_fresh(tmp_path):
    a = results.new_run_dir(tmp_path, "exp")
    b = results.new_run_dir(tmp_path, "exp")
    assert a != b and a.is_dir() and b.is_dir()


@pytest.mark.parametrize(
    "umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"]
)
def test_written_files_honour_the_umask_like_a_plain_open(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths = [
            results.save_json(tmp_path / "r.json", {"a": 1}),
            results.save_jsonl(tmp_path / "r.jsonl", [{"a": 1}]),
            results.save_csv(tmp_path / "r.csv", [{"a": 1}]),
        ]
        with open(tmp_path / "plain.txt", "w") as f:  # what the results files must match
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path.name


def test_paths_are_saved_as_strings(tmp_path):
    from pathlib import Path

    out = results.save_json(tmp_path / "r.json", {"out": Path("runs") / "a", "n": [Path("b")]})
    assert results.load_json(out) == {"out": str(Path("runs") / "a"), "n": ["b"]}
