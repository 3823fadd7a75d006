"""Every ``from gendiff... import name`` written outside the package resolves (issue 28).

Notebooks, the GPU shell scripts' inline Python and the Markdown docs import gendiff by name; when a module moves,
nothing else in the test suite notices until the notebook or the GPU script runs. This test reads those files as
text, finds each import of gendiff, imports the module and checks every name is there.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMPORT = re.compile(r"^\s*from\s+(gendiff(?:\.\w+)*)\s+import\s+(\([^)]*\)|[^\n#]+)", re.MULTILINE)


def _text(path: Path) -> str:
    """The file's code as text (a notebook's code cells joined)."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return path.read_text()


def _files() -> list[Path]:
    found = [*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("tools/**/*.sh"), *ROOT.glob("benchmarks/**/*.sh"),
             *ROOT.glob("docs/**/*.md"), *ROOT.glob("*.md"), *ROOT.glob("benchmarks/**/*.md")]
    return sorted(p for p in found if ".venv" not in p.parts)


def imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for each name imported from gendiff in ``path``."""
    out = []
    for module, names in IMPORT.findall(_text(path)):
        for name in names.strip("()").replace("\n", " ").split(","):
            name = name.split("#")[0].strip().split(" as ")[0].strip()
            if name and name != "*":
                out.append((module, name))
    return out


FILES = [p for p in _files() if imports(p)]


def test_the_scan_finds_the_notebooks_and_gpu_scripts() -> None:
    names = {p.name for p in FILES}
    assert "ads_quickstart.ipynb" in names and "gpu_pgd.sh" in names, names


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_every_gendiff_import_resolves(path: Path) -> None:
    missing = []
    for module, name in imports(path):
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"{module} ({e})")
            continue
        if not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{module}.{name}")
    assert not missing, f"{path.relative_to(ROOT)} imports names that do not exist: {missing}"
