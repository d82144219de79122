"""How the package is installed: `import meanfield` finds the real package wherever Python
runs, in particular from the parent folder of a clone named `meanfield` (which has no
__init__.py at its top and would otherwise be imported as an empty namespace package)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_is_found_from_the_parent_folder_of_a_clone_named_meanfield(tmp_path):
    clone = tmp_path / "meanfield"  # what `git clone <url> meanfield` makes, seen from above
    for name in ("meanfield", "experiments", "tests"):
        (clone / name).mkdir(parents=True)
    (clone / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    code = "import meanfield; print(meanfield.__file__); print(meanfield.Block().name)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.split()[-1] == "relu-none-residual", (
        "`import meanfield` from the parent folder of a clone named meanfield found a namespace "
        "package, not the installed one; an editable install made before pyproject.toml set "
        "package-dir installs an import finder that loses to it: run `pip install -e .` "
        f"again.\n{out.stdout}{out.stderr}"
    )
    assert Path(out.stdout.split()[0]).name == "__init__.py"
