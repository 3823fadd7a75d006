"""The wheel holds gendiff and its application folders, installed as gendiff.pipelines / .mri / .offline."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in cfg["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert found == set(cfg["packages"]), f"pyproject packages differ from the folders: {sorted(found ^ set(cfg['packages']))}"


@pytest.mark.slow
def test_wheel_installs_and_imports(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheel_dir), str(ROOT)], check=True, capture_output=True)
    wheel = next(wheel_dir.glob("gendiff-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = (
        "import gendiff, gendiff.pipelines, gendiff.mri.data, gendiff.offline, gendiff.guidance, gendiff.llm.losses;"
        "from gendiff.mri.demo import shipped_prior;"
        f"import pathlib; p = shipped_prior(); assert str(p).startswith({str(target)!r}), p;"
        f"assert gendiff.__file__.startswith({str(target)!r}), gendiff.__file__; print('ok')"
    )
    # -S: no site processing, so the editable install's import hook does not shadow the wheel
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])}
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
