"""The README's Python snippets, each run as a user runs it: in a fresh process, from a folder
outside the checkout, with nothing warmed by an earlier test. A line that ends in ``# True``
states a fact about the computed value, so it runs as an assertion."""

import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def _with_assertions(code: str) -> str:
    """`expr  # True` -> `assert expr, "expr"`: the README's stated facts are checked."""
    lines = []
    for line in code.splitlines():
        m = re.fullmatch(r"(\S.*?)\s*#\s*True\s*", line)
        lines.append(f"assert bool({m[1]}), {m[1]!r}" if m else line)
    return "\n".join(lines) + "\n"


def test_the_readme_has_its_snippets():
    snippets = _snippets()
    assert len(snippets) >= 2
    assert "assert bool(" in _with_assertions(snippets[1])


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_snippets())))
def test_readme_snippet_runs_in_a_fresh_process(index, tmp_path):
    code = _with_assertions(_snippets()[index])
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"README snippet {index} failed:\n{done.stderr[-4000:]}"
