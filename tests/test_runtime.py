"""The experiments' persistent compilation cache: which folder is used, and that a second run
of the main job compiles nothing new."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from meanfield.core import runtime

ROOT = Path(__file__).resolve().parents[1]


def _args(*argv):
    p = argparse.ArgumentParser()
    runtime.add_compile_cache_argument(p)
    return p.parse_args(list(argv))


@pytest.fixture
def restore_cache_config():
    before = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", before)


def test_the_folder_given_wins_and_off_means_off(tmp_path, restore_cache_config):
    assert runtime.use_compile_cache(_args("--no-compile-cache")) is None
    folder = tmp_path / "cache"
    assert runtime.use_compile_cache(_args("--compile-cache", str(folder))) == folder
    assert folder.is_dir() and jax.config.jax_compilation_cache_dir == str(folder)
    # Without a flag, a folder already configured in the process is kept.
    assert runtime.use_compile_cache(_args()) == folder
    with pytest.raises(SystemExit):
        _args("--compile-cache", "x", "--no-compile-cache")  # one or the other


def test_the_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(runtime.ENV, str(tmp_path / "a"))
    assert runtime.default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv(runtime.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime.default_cache_dir() == tmp_path / "xdg" / "meanfield" / "jax"


# Runs the main job in a fresh process and prints how many compiles JAX's persistent cache
# answered and how many it missed (its own monitoring events).
_DRIVER = """
import collections, json, runpy, sys
import jax.monitoring
counts = collections.Counter()
jax.monitoring.register_event_listener(lambda event, **kw: counts.update([event]))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
print(json.dumps({k.rsplit("/", 1)[-1]: v for k, v in counts.items() if "compilation_cache" in k}))
"""


@pytest.mark.slow
def test_a_second_run_of_the_main_job_compiles_nothing_new(tmp_path):
    cache = tmp_path / "cache"
    cmd = [
        sys.executable, "-c", _DRIVER,
        str(ROOT / "experiments" / "variance_vs_depth.py"),
        "--depth", "5", "--max-depth", "10", "--num-depths", "3", "--networks", "4",
        "--batch", "2", "--width", "16", "--formats", "png",
        "--compile-cache", str(cache), "--out", str(tmp_path / "runs"),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != runtime.ENV}

    def run():
        out = subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=600, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    cold = run()  # (a cold run already hits where it builds the same program twice)
    assert cold.get("cache_misses", 0) > 10, cold
    warm = run()
    assert warm.get("cache_misses", 0) == 0, warm  # every program was read back
    assert warm["cache_hits"] == cold["cache_misses"] + cold.get("cache_hits", 0), (cold, warm)
    cmd[cmd.index("--compile-cache") : cmd.index("--compile-cache") + 2] = ["--no-compile-cache"]
    off = run()
    assert off.get("cache_hits", 0) == 0, off  # off means off
