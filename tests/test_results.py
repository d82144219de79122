import json
import math
import os
import stat
from pathlib import Path

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
    back = results.load_json(path)
    assert back["a"] == [0, 1, 2] and back["b"] == 0.5
    assert math.isnan(back["c"][0]) and back["c"][1:] == [math.inf, 1.0]
    assert back["d"]["e"][0][0] == 1.0 and math.isnan(back["d"]["e"][0][1])
    assert not list(path.parent.glob(".*.tmp"))


def _strict(text: str):
    """``text`` parsed as strict JSON: NaN and Infinity tokens are refused."""

    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_inf_minus_inf_and_nan_are_stored_distinctly_and_read_back_exactly(tmp_path):
    # An overflow (inf), its negative and an undefined value (NaN) were all written as null,
    # and null is also what an absent value is: four different things, one on disk.
    values = [math.inf, -math.inf, math.nan, None, 1.5, np.float32("inf"), np.float64("-inf")]
    payload = {"x": values, "arr": np.array([np.inf, -np.inf, np.nan, 2.0]), "one": -math.inf}
    path = results.save_json(tmp_path / "r.json", payload)
    raw = _strict(path.read_text())  # still strict JSON, readable by any JSON parser
    tag = results.NONFINITE_KEY
    assert raw["x"][:4] == [{tag: "inf"}, {tag: "-inf"}, {tag: "nan"}, None]
    assert raw["one"] == {tag: "-inf"}
    assert '{"__float__": "inf"}' in path.read_text()  # one line each, as the numbers
    back = results.load_json(path)
    x = back["x"]
    assert x[0] == math.inf and x[1] == -math.inf and math.isnan(x[2]) and x[3] is None
    assert x[4:] == [1.5, math.inf, -math.inf]
    assert back["arr"][:2] == [math.inf, -math.inf] and math.isnan(back["arr"][2])
    assert back["one"] == -math.inf
    # JSON lines (metrics files) too.
    rows = [{"loss": math.inf, "acc": math.nan, "step": None}, {"loss": -math.inf}]
    lines = results.save_jsonl(tmp_path / "m.jsonl", rows)
    assert [_strict(line) for line in lines.read_text().splitlines()][1] == {"loss": {tag: "-inf"}}
    back = results.load_jsonl(lines)
    assert back[0]["loss"] == math.inf and math.isnan(back[0]["acc"]) and back[0]["step"] is None
    assert back[1] == {"loss": -math.inf}
    # JSON parsed elsewhere decodes the same way.
    assert results.from_jsonable(raw)["x"][:2] == [math.inf, -math.inf]
    # CSV: the cells Python's float reads, an absent value empty.
    table = results.save_csv(tmp_path / "t.csv", [{"a": math.inf, "b": -math.inf, "c": math.nan}])
    assert table.read_text().splitlines() == ["a,b,c", "inf,-inf,nan"]
    # Files written before, with null for every non-finite value, read as they did.
    old = tmp_path / "old.json"
    old.write_text('{"m2_z": [1.0, null, 3.0], "note": null, "key": {"__float__": 1}}')
    assert results.load_json(old) == {
        "m2_z": [1.0, None, 3.0],
        "note": None,
        "key": {"__float__": 1},
    }
    old_lines = tmp_path / "old.jsonl"
    old_lines.write_text('{"val_loss": null, "epoch": 1}\n\n{"val_loss": 2.5, "epoch": 2}\n')
    assert results.load_jsonl(old_lines) == [
        {"val_loss": None, "epoch": 1},
        {"val_loss": 2.5, "epoch": 2},
    ]
    # A mapping that only looks like a tag (a string that is not inf, -inf or nan) stays one.
    path = results.save_json(tmp_path / "r.json", {"t": {"__float__": "x"}})
    assert results.load_json(path) == {"t": {"__float__": "x"}}


def test_blocks_and_layer_trees_are_stored_by_their_names(tmp_path):
    import meanfield
    from meanfield import layers

    block = meanfield.Block("relu", "bn_post", residual=True, shortcut=2)
    tree = layers.from_name("res[BatchNorm-relu-Dense]")
    payload = {"block": block, "tree": tree, "blocks": [block, tree], block: {"depth": 3}}
    for path in (
        results.save_json(tmp_path / "r.json", payload),
        results.save_jsonl(tmp_path / "r.jsonl", [payload]),
    ):
        back = results.load_json(path) if path.suffix == ".json" else results.load_jsonl(path)[0]
        assert back["block"] == "relu-bn_post-residual-k2" and back[block.name] == {"depth": 3}
        assert layers.network_from_name(back["block"]) == block
        assert layers.from_name(back["tree"]) == tree
        assert [layers.network_from_name(n) for n in back["blocks"]] == [block, tree]
    rows = results.save_csv(tmp_path / "r.csv", [{"block": block, "tree": tree}])
    assert rows.read_text().splitlines()[1] == "relu-bn_post-residual-k2,res[BatchNorm-relu-Dense]"
    # Anything else JSON cannot hold is refused naming the file, and nothing is written.
    with pytest.raises(TypeError, match=r"cannot write .*x\.json: .*object"):
        results.save_json(tmp_path / "x.json", {"bad": object()})
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_truncated_results_or_metrics_file_names_the_file(tmp_path, suffix):
    path = tmp_path / f"results{suffix}"
    if suffix == ".json":
        results.save_json(path, {"profiles": list(range(50)), "x": math.inf})
        load = results.load_json
    else:
        results.save_jsonl(path, [{"epoch": e, "loss": 0.5} for e in range(4)])
        load = results.load_jsonl
    text = path.read_text()
    path.write_text(text[: len(text) // 2 + 5])  # a write cut short, inside a line
    with pytest.raises(results.CorruptFileError) as err:
        load(path)
    message = str(err.value)
    assert str(path) in message and "truncated or corrupt" in message, message
    assert isinstance(err.value, json.JSONDecodeError) and isinstance(err.value, ValueError)
    assert err.value.path == path
    if suffix == ".jsonl":
        assert "line 3" in message, message  # the line that is cut
    path.write_text("")  # a JSON lines file of no rows is valid; a JSON file is not
    if suffix == ".json":
        with pytest.raises(results.CorruptFileError, match=f"{path.name} is empty"):
            load(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(results.CorruptFileError, match="not UTF-8"):
        load(path)


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
    path = results.save_csv(tmp_path / "t.csv", [{"x": 1, "y": None}, {"x": 2, "y": 3.5}])
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
    out = results.save_json(tmp_path / "r.json", {"out": Path("runs") / "a", "n": [Path("b")]})
    assert results.load_json(out) == {"out": str(Path("runs") / "a"), "n": ["b"]}


def test_run_folder_is_removed_when_the_run_fails_and_kept_otherwise(tmp_path):
    base = tmp_path / "new" / "runs"  # neither exists yet
    with results.run_folder(base, "exp") as done:
        (done / "results.json").write_text("{}")
    assert (done / "results.json").is_file()
    for failure in (MemoryError, KeyboardInterrupt, SystemExit):
        with pytest.raises(failure), results.run_folder(base, "exp") as failed:
            (failed / "partial.json").write_text("{")
            raise failure()
        assert not failed.exists()
    assert sorted(p.name for p in base.iterdir()) == [done.name]  # the good run stays
    # The folders above it that it made go too, when nothing else is in them.
    with pytest.raises(MemoryError), results.run_folder(tmp_path / "a" / "b", "exp") as path:
        raise MemoryError()
    assert not path.exists() and not (tmp_path / "a").exists()
    # keep: a failed run that can be resumed (the trainer's, once it has a checkpoint) stays.
    with (
        pytest.raises(KeyboardInterrupt),
        results.run_folder(base, "train", keep=lambda p: (p / "checkpoint").exists()) as kept,
    ):
        (kept / "checkpoint").write_text("")
        raise KeyboardInterrupt()
    assert (kept / "checkpoint").is_file()


def test_out_is_refused_where_no_folder_can_be_made(tmp_path):
    import argparse

    # A permission check alone passes a folder that refuses new entries (a read-only file
    # system, and every folder for root): a folder is tried there, and removed.
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    for folder in (locked, Path("/sys"), Path("/proc")):
        try:
            (folder / "probe").mkdir()
        except OSError:
            break
        (folder / "probe").rmdir()
    else:
        pytest.skip("no folder on this machine refuses a new folder")
    with pytest.raises(argparse.ArgumentTypeError, match=f"cannot write into '{folder}'"):
        results.output_folder(str(folder / "runs"))
    assert results.output_folder(str(tmp_path / "x" / "runs")) == str(tmp_path / "x" / "runs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked"]  # the probe is gone
