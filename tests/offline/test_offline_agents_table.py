"""The agent study's bookkeeping (benchmarks/offline/agents.py): row labels, pairs, and the guards that keep runs made
from other settings or other input files out of one table; and ``gendiff.io.tree_fingerprint`` underneath."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from gendiff.io import tree_fingerprint

ROOT = Path(__file__).resolve().parents[2]


def _agents():
    spec = importlib.util.spec_from_file_location("bench_offline_agents", ROOT / "benchmarks/offline/agents.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_labels_and_pairs() -> None:
    ag = _agents()
    assert ag.label({"synthetic": "none", "real_per_batch": 128}) == "none"  # real data only: the share is moot
    assert ag.label({"synthetic": "pgd", "real_per_batch": 16, "relabel": "none"}) == "pgd"
    assert ag.label({"synthetic": "pgd", "real_per_batch": 128}) == "pgd@128real"
    assert ag.label({"synthetic": "unguided", "relabel": "simulator", "real_per_batch": 16,
                     "regenerate_unguided": True}) == "unguided+sim"
    # a non-PGD set made once (runs from before the field existed carry no regenerate_unguided), another set size
    assert ag.label({"synthetic": "synther", "real_per_batch": 16}) == "synther+once"
    assert ag.label({"synthetic": "pgd", "num_synthetic": 100_000}) == "pgd@100000syn"
    assert ag.label({"synthetic": "resample", "regenerate_unguided": True, "num_synthetic": 5000,
                     "real_per_batch": 128}) == "resample@128real@5000syn"
    assert ag._base("resample@128real@5000syn") == "resample" and ag._base("synther+once") == "synther"
    assert ag.label({"synthetic": "pgd", "relabel": "simulator", "real_per_batch": 128}) == "pgd+sim@128real"
    nofalls = {"synthetic": "resample", "regenerate_unguided": True, "synthetic_terminals": False}
    assert ag.label(nofalls) == "resample+nofalls" and ag._base("resample+nofalls") == "resample"
    assert ag.label({"synthetic": "unguided", "regenerate_unguided": True, "match_reward": True}, {
        "action_layout": "linear"}) == "unguided+linact+rwmatch"
    assert ag.label({"synthetic": "unguided", "regenerate_unguided": True, "actor_batch": "real"}, {
        "action_layout": "linear"}) == "unguided+linact+actorreal"
    assert ag.pairs({"none", "resample", "resample+nofalls"}) == [
        ("resample", "none"), ("resample+nofalls", "none"), ("resample+nofalls", "resample")]
    got = ag.pairs({"none", "pgd", "unguided", "pgd+sim", "pgd@128real"})
    assert got == [("pgd", "none"), ("pgd", "unguided"), ("unguided", "none"), ("pgd+sim", "none"),
                   ("pgd+sim", "pgd"), ("pgd@128real", "none"), ("pgd@128real", "pgd")]
    # a pipeline holding actions linearly (the run's "layout" record; none recorded: the paper's arctanh)
    lin = {"action_layout": "linear", "residual": False}
    assert ag.label({"synthetic": "pgd"}, lin) == "pgd+linact" and ag._base("pgd+linact") == "pgd"
    assert ag.label({"synthetic": "pgd"}, {"action_layout": "arctanh"}) == ag.label({"synthetic": "pgd"}) == "pgd"
    assert ag.label({"synthetic": "unguided", "regenerate_unguided": True}, lin) == "unguided+linact"
    assert ag.label({"synthetic": "none"}, lin) == "none"
    assert ag.pairs({"none", "pgd", "pgd+linact", "unguided+linact"}) == [
        ("pgd", "none"), ("pgd+linact", "none"), ("pgd+linact", "pgd"), ("pgd+linact", "unguided+linact"),
        ("unguided+linact", "none"), ("pgd", "unguided+linact")]
    # the tables made before regenerate_unguided: pgd still meets its unguided and SynthER rows
    assert ag.pairs({"none", "pgd", "unguided+once", "synther+once"}) == [
        ("pgd", "none"), ("synther+once", "none"), ("pgd", "synther+once"), ("unguided+once", "none"),
        ("pgd", "unguided+once")]


def _run_file(work: Path, synthetic: str, seed: int, score: float, real: int = 16, coeff: float = 0.1) -> None:
    cfg = {"dataset_id": "gendiff/x/medium-v0", "algo": "td3bc", "synthetic": synthetic, "seed": seed,
           "real_per_batch": real, "relabel": "none", "guidance_coeff": coeff}
    (work / f"td3bc_{synthetic}_{real}_s{seed}.json").write_text(json.dumps(
        {"config": cfg, "final": {"score_mean": score}, "curve": [{"step": 10, "score_mean": score}]}))


def test_merge_pairs_share_rows_and_refuses_two_copies_of_a_dataset(tmp_path: Path) -> None:
    ag = _agents()
    a, b = tmp_path / "a", tmp_path / "b"
    for w, fp in ((a, "1111"), (b, "1111")):
        w.mkdir()
        (w / "settings.json").write_text(json.dumps({"dataset_id": "gendiff/x/medium-v0", "overrides": {},
                                                      "inputs": {"dataset": fp}}))
    for seed, (none, pgd50) in enumerate([(10.0, 12.0), (20.0, 25.0)]):
        _run_file(a, "none", seed, none)
        _run_file(b, "pgd", seed, pgd50, real=128)
    res = ag.table([a, b], tmp_path / "t")
    (d,) = [d for d in res["paired"] if d["pair"] == "pgd@128real - none"]
    assert d["mean"] == pytest.approx(3.5) and d["wins"] == 2
    (b / "settings.json").write_text(json.dumps({"dataset_id": "gendiff/x/medium-v0", "overrides": {},
                                                  "inputs": {"dataset": "2222"}}))
    with pytest.raises(SystemExit, match="two different copies of gendiff/x/medium-v0"):
        ag.table([a, b], tmp_path / "t2")


def test_merge_never_replaces_a_table_unasked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--merge needs --out and refuses an existing table without --overwrite (a run once wrote its table over
    benchmarks/offline/agents.md by default)."""
    ag = _agents()
    a = tmp_path / "a"
    a.mkdir()
    _run_file(a, "none", 0, 10.0)
    out = tmp_path / "t"
    monkeypatch.setattr("sys.argv", ["agents.py", "--merge", str(a)])
    with pytest.raises(SystemExit, match="--merge needs --out"):
        ag.main()
    monkeypatch.setattr("sys.argv", ["agents.py", "--merge", str(a), "--out", str(out)])
    ag.main()
    first = (tmp_path / "t.md").read_text()
    _run_file(a, "none", 1, 30.0)
    with pytest.raises(FileExistsError, match="t.json exists"):
        ag.main()
    assert (tmp_path / "t.md").read_text() == first
    monkeypatch.setattr("sys.argv", ["agents.py", "--merge", str(a), "--out", str(out), "--overwrite"])
    ag.main()
    assert "20.0 +- 14.1" in (tmp_path / "t.md").read_text()


def test_merge_refuses_one_row_and_seed_from_two_folders(tmp_path: Path) -> None:
    ag = _agents()
    a, b = tmp_path / "a", tmp_path / "b"
    for w in (a, b):
        w.mkdir()
        _run_file(w, "pgd", 0, 10.0 if w == a else 30.0)  # the same label and seed: which score is the row's?
    with pytest.raises(SystemExit, match="both row 'pgd' seed 0"):
        ag.table([a, b], tmp_path / "t")


def test_tree_fingerprint(tmp_path: Path) -> None:
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "w.bin").write_bytes(b"abc")
    (d / "c.json").write_text("{}")
    fp = tree_fingerprint(d)
    assert fp == tree_fingerprint(d) and len(fp) == 16
    (d / "sub" / "w.bin").write_bytes(b"abd")  # one byte changed
    assert tree_fingerprint(d) != fp
    (d / "sub" / "w.bin").write_bytes(b"abc")
    assert tree_fingerprint(d) == fp
    (d / "sub" / "w.bin").rename(d / "sub" / "v.bin")  # same bytes, another name
    assert tree_fingerprint(d) != fp
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        tree_fingerprint(tmp_path / "missing")


def test_a_work_folder_refuses_runs_made_otherwise(tmp_path: Path) -> None:
    ag = _agents()
    w = tmp_path / "w"
    first = {"dataset_id": "d", "pipeline": "p", "synther": "", "overrides": {"steps": 100},
             "inputs": {"dataset": "1111", "pipeline": "aaaa", "synther": ""}, "packages": {"torch": "2.13.0"}}
    ag.claim_work(w, first)
    ag.claim_work(w, json.loads(json.dumps(first)))  # the same settings: resumes
    with pytest.raises(SystemExit, match="other settings \\(overrides"):
        ag.claim_work(w, {**first, "overrides": {"steps": 200}})
    with pytest.raises(SystemExit, match="inputs"):  # a rebuilt pipeline with other weights, same path
        ag.claim_work(w, {**first, "inputs": {**first["inputs"], "pipeline": "bbbb"}})
    with pytest.raises(SystemExit, match="packages"):  # runs made under another torch are not mixed in silently
        ag.claim_work(w, {**first, "packages": {"torch": "2.14.0"}})
    assert json.loads((w / "settings.json").read_text()) == first


def test_merge_shows_a_pgd_rows_coefficient_and_refuses_a_row_of_two(tmp_path: Path) -> None:
    """The row label does not hold the guidance coefficient: the table shows it per PGD row, and a PGD row whose
    runs used two coefficients (two folders, different seeds) stops the merge instead of averaging them."""
    ag = _agents()
    a, b = tmp_path / "a", tmp_path / "b"
    for w in (a, b):
        w.mkdir()
    _run_file(a, "none", 0, 10.0)
    _run_file(a, "pgd", 0, 12.0, coeff=0.003)
    res = ag.table([a], tmp_path / "t")
    assert {r["synthetic"]: r["guidance_coeff"] for r in res["rows"]} == {"none": None, "pgd": 0.003}
    assert "| td3bc | pgd | 0.003 | 12.0 +- 0.0 | 0 |" in (tmp_path / "t.md").read_text()
    _run_file(b, "pgd", 1, 30.0, coeff=0.1)
    with pytest.raises(SystemExit, match="guidance_coeff 0.1.*merge one coefficient per table"):
        ag.table([a, b], tmp_path / "t2")
