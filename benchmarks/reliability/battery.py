"""The bad-input and fault battery of issue 32, rerunnable: every case runs the real ``gendiff`` command.

Each case is a command a new user could type (bad numbers, broken or foreign files, wrong ids, interrupted
writes), run in a subprocess against small data the script makes, and judged:

- ``error`` cases must exit non-zero with one ``gendiff: error: ...`` line that says what is wrong (the
  expected words are checked), no traceback, no advice to load unsafe pickles, and leave the files they
  were given byte for byte as they were (``data lost`` otherwise);
- ``ok`` cases must exit 0 and give the right result (checked on the files they write);
- ``kill`` cases kill -9 a command at a chosen phase (SAC training or the Minari write of make-dataset; the
  training loops of train-prior, train-diffusion and llm train) and check: the earlier state is intact, nothing
  half-written counts as existing, a rerun works, and ``--resume`` reaches the full step count;
- ``seed`` cases run a training command twice with the same seed and compare the saved weights exactly.

Usage (from the repository root, on CPU):
    .venv/bin/python benchmarks/reliability/battery.py                    # everything, ~15 min on 2 cores
    .venv/bin/python benchmarks/reliability/battery.py --groups bad       # the bad-input cases only (~4 min)
    .venv/bin/python benchmarks/reliability/battery.py --groups kill,seed --out /tmp/b

Writes ``<out>.json`` and ``<out>.md`` (default benchmarks/reliability/battery): one row per case with the
exit code, the first line of the message and the verdict, and the totals (tracebacks, data lost, wrong results).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gendiff.io import beside

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_PRIOR = ROOT / "gendiff" / "assets" / "mri_prior_32"
PY = sys.executable


# --------------------------------------------------------------------------------------------------
# Running and judging
# --------------------------------------------------------------------------------------------------
@dataclass
class Result:
    case: str
    issue: str
    group: str
    command: str
    code: int | None
    message: str
    verdict: str
    notes: list[str] = field(default_factory=list)


class Battery:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.env = {**os.environ, "MINARI_DATASETS_PATH": str(work / "minari"), "HF_HUB_OFFLINE": "1",
                    "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false"}
        self.env.pop("GENDIFF_DEBUG", None)
        self.results: list[Result] = []

    # ---- subprocesses ------------------------------------------------------------------------------
    def gendiff(self, *argv: str, timeout: float = 600) -> tuple[int, str]:
        proc = subprocess.run([PY, "-m", "gendiff.cli", *argv], env=self.env, cwd=self.work, capture_output=True,
                              text=True, timeout=timeout)
        return proc.returncode, proc.stdout + proc.stderr

    def start(self, *argv: str) -> subprocess.Popen:
        log = open(self.work / "popen.log", "w")  # noqa: SIM115 (closed by the child's end)
        return subprocess.Popen([PY, "-m", "gendiff.cli", *argv], env=self.env, cwd=self.work, stdout=log,
                                stderr=subprocess.STDOUT)

    def python(self, code: str, timeout: float = 600) -> str:
        proc = subprocess.run([PY, "-c", code], env=self.env, cwd=self.work, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode:
            raise RuntimeError(f"battery helper failed:\n{proc.stderr[-3000:]}")
        return proc.stdout

    # ---- one bad-input or ok case ----------------------------------------------------------------------
    def case(self, case: str, issue: str, argv: list[str], expect: str, needles: tuple[str, ...] = (),
             protect: tuple[Path, ...] = (), check: Callable[[str], tuple[bool, str]] | None = None,
             group: str = "bad") -> Result:
        before = {p: digest(p) for p in protect}
        t0 = time.perf_counter()
        code, out = self.gendiff(*argv)
        notes, verdict = [f"{time.perf_counter() - t0:.1f} s"], "ok"
        message = error_line(out) if expect == "error" else last_line(out)
        if "Traceback (most recent call last)" in out:
            verdict = "FAIL: traceback"
        elif expect == "error":
            missing = [n for n in needles if n.lower() not in message.lower()]
            if code == 0 or not message.startswith("gendiff: error: "):
                verdict = "FAIL: no clear error"
            elif missing:
                verdict = f"FAIL: message lacks {missing}"
            elif "weights_only=false" in out.lower().replace(" ", ""):
                verdict = "FAIL: suggests weights_only=False"
        elif code != 0:
            verdict = "FAIL: exit code"
        lost = [str(p.relative_to(self.work)) for p in protect if digest(p) != before[p]]
        if lost:
            verdict = f"FAIL: data lost ({', '.join(lost)})"
        if check is not None and verdict == "ok":
            good, note = check(out)
            notes.append(note)
            message = message if expect == "error" else f"(exit 0) {note}"
            if not good:
                verdict = "FAIL: wrong result"
        return self._record(Result(case, issue, group, "gendiff " + " ".join(argv), code, message, verdict, notes))

    def judged(self, case: str, issue: str, group: str, command: str, checks: list[tuple[bool, str]],
               message: str = "", code: int | None = None) -> Result:
        """A multi-step case (kill -9, seeds): ok when every (passed, note) check passed."""
        failed = [n for ok, n in checks if not ok]
        verdict = "ok" if not failed else "FAIL: " + "; ".join(failed)
        return self._record(Result(case, issue, group, command, code, message, verdict, [n for _, n in checks]))

    def _record(self, r: Result) -> Result:
        self.results.append(r)
        print(f"[{r.verdict:>6}] {r.case}: exit {r.code} | {r.message[:150]}", flush=True)
        return r


def must(run: tuple[int, str]) -> None:
    """A fixture command must succeed (else stop with its output)."""
    if run[0] != 0:
        raise RuntimeError(f"a fixture command failed (exit {run[0]}):\n{run[1][-3000:]}")


def digest(path: Path) -> str:
    """A hash of a file or of a whole folder (names and contents, staging folders left out), 'missing' if absent."""
    if not path.exists():
        return "missing"
    h = hashlib.sha256()
    # a staging folder inside (train-diffusion builds out_dir/.train.staging) is the killed new run, not old state
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not any(
        part.endswith(".staging") for part in p.relative_to(path).parts))
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def error_line(out: str) -> str:
    lines = [ln for ln in out.replace("\r", "\n").splitlines() if ln.startswith("gendiff: error:")]
    return lines[0] if lines else last_line(out)


def last_line(out: str) -> str:
    lines = [ln.strip() for ln in out.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def wait_for(proc: subprocess.Popen, cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not cond():
        if proc.poll() is not None:
            raise RuntimeError(f"the command ended before {what}")
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.01)


def kill9(proc: subprocess.Popen) -> bool:
    """SIGKILL ``proc``; True if it was still running (so the kill really interrupted it)."""
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return alive


# --------------------------------------------------------------------------------------------------
# Fixtures: small data the cases use (real fastMRI-format files, real Minari datasets, real priors)
# --------------------------------------------------------------------------------------------------
def make_fixtures(b: Battery) -> dict[str, Path]:
    w = b.work
    fx = {"train": w / "mri" / "train", "test": w / "mri" / "test", "prior": w / "prior"}
    must(b.gendiff("mri", "make-synthetic", "--out", str(fx["train"]), "--volumes", "1", "--slices", "4",
                     "--size", "32"))
    must(b.gendiff("mri", "make-synthetic", "--out", str(fx["test"]), "--volumes", "1", "--slices", "2",
                     "--size", "32", "--seed", "1"))
    shutil.copytree(SHIPPED_PRIOR, fx["prior"])
    weights = "model/diffusion_pytorch_model.safetensors"
    broken = {
        "prior_truncated": lambda p: (p / weights).write_bytes((p / weights).read_bytes()[:300]),
        "prior_pickle": lambda p: (p / weights).write_bytes(pickle.dumps({"w": Evil()})),
        "prior_pickle_bin": lambda p: ((p / weights).unlink(), (p / "model" / "diffusion_pytorch_model.bin")
                                       .write_bytes(pickle.dumps({"w": Evil()}))),
        "prior_bad_config": lambda p: (p / "model" / "config.json").write_text("{'sample_size': 32,"),
        "prior_bad_scheduler": lambda p: (p / "scheduler" / "scheduler_config.json").write_text(
            json.dumps({**json.loads((p / "scheduler" / "scheduler_config.json").read_text()),
                        "_class_name": "NoSuchScheduler"})),
    }
    for name, spoil in broken.items():
        fx[name] = w / name
        shutil.copytree(SHIPPED_PRIOR, fx[name])
        spoil(fx[name])
    # multi-coil fastMRI files (4 coils) and a single-coil file with a NaN in k-space, written with h5py
    fx["multicoil"], fx["nan"] = w / "mri" / "multicoil", w / "mri" / "nan"
    b.python(f"""
import numpy as np, h5py, pathlib
from gendiff.mri.synthetic import make_volume, ismrmrd_header
def fft2c(x):
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), norm="ortho"), axes=ax)
def write(path, k, recon=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=k.astype(np.complex64))
        hf.create_dataset("ismrmrd_header", data=ismrmrd_header(k.shape[-2:], k.shape[-2:]))
        if recon is not None:
            hf.create_dataset("reconstruction_rss", data=recon.astype(np.float32))
rng = np.random.default_rng(0)
img = make_volume(32, 2, rng)
yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
sens = np.stack([np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2)) * np.exp(1j * (cx * xx + cy * yy))
                 for cx, cy in [(-1, -1), (1, -1), (0, 1), (1, 1)]])
coils = img[:, None] * sens[None]
write(pathlib.Path({str(fx["multicoil"])!r}) / "mc.h5", fft2c(coils), np.sqrt((np.abs(coils) ** 2).sum(1)))
k = fft2c(img); k[1, 3, 4] = np.nan
write(pathlib.Path({str(fx["nan"])!r}) / "nan_file.h5", k)
""")
    # Minari datasets: a small continuous one (make-dataset) and a discrete one (CartPole, made with Minari directly)
    must(b.gendiff("offline", "make-dataset", "--env", "Hopper-v5", "--level", "random", "--steps", "400",
                     "--dataset-id", "battery/hopper/random-v0", "--no-progress"))
    fx["dataset"] = w / "minari" / "battery" / "hopper" / "random-v0"
    b.python("""
import gymnasium as gym, minari
from gendiff.offline.behaviour import rollout
minari.create_dataset_from_buffers("battery/cartpole/random-v0", rollout("CartPole-v1", None, 200, 0), env="CartPole-v1",
                                   algorithm_name="random", author="battery", author_email="b@localhost",
                                   code_permalink="battery")
""")
    fx["llm_bad"] = w / "llm_bad"
    fx["llm_bad"].mkdir()
    (fx["llm_bad"] / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    return fx


class Evil:
    """Pickled into the 'weights' files: loading it with pickle would run os.system; gendiff must refuse."""

    def __reduce__(self):
        return (os.system, ("echo PWNED > pwned.txt",))


# --------------------------------------------------------------------------------------------------
# The cases of the issue
# --------------------------------------------------------------------------------------------------
def bad_input_cases(b: Battery, fx: dict[str, Path]) -> None:
    w = b.work
    opts = ["--slices", "2", "--num-particles", "2", "--num-inference-steps", "3", "--strategies", "ads,equispaced", "--bootstrap", "50",
            "--no-progress"]  # a repeated flag overrides: the last one counts
    bench = ["mri", "benchmark", "--prior", str(fx["prior"]), "--data", str(fx["test"]), *opts]
    res = w / "res" / "mri.json"
    must(b.gendiff(*bench, "--out", str(res)))  # an earlier results table to protect
    rows = lambda p: [r["strategy"] for r in json.loads(p.read_text())["rows"]]  # noqa: E731
    protect_res = (res, res.with_suffix(".md"))

    # ---- data lost or overwritten ----
    ds_id = "battery/hopper/random-v0"
    b.case("make-dataset --force with a bad env keeps the dataset", "data lost: --force deleted before checking",
           ["offline", "make-dataset", "--env", "Bogus-v0", "--dataset-id", ds_id, "--force"], "error",
           ("Bogus-v0",), protect=(fx["dataset"],),
           check=None)
    b.case("dataset still loads after the refused --force", "data lost (check)",
           ["offline", "dataset-stats", "--dataset-id", ds_id], "ok", protect=(fx["dataset"],),
           check=lambda out: (f'"dataset_id": "{ds_id}"' in out, "dataset-stats reads it"))
    agent_out = w / "res" / "agent.json"
    agent = ["offline", "train-agent", "--dataset-id", ds_id, "--steps", "20", "--batch-size", "32",
             "--eval-every", "0", "--eval-episodes", "1", "--no-progress", "--out", str(agent_out)]
    must(b.gendiff(*agent))
    b.case("train-agent --out over earlier results", "data lost: results overwritten without a word", agent,
           "error", ("--overwrite",), protect=(agent_out, agent_out.with_suffix(".md")))
    b.case("train-agent --out ... --overwrite replaces", "(the way to replace)", [*agent, "--overwrite"],
           "ok", check=lambda out: (json.loads(agent_out.read_text())["config"]["overwrite"] is True, "replaced"))
    b.case("mri benchmark --out over an earlier table", "data lost: results overwritten without a word",
           [*bench, "--out", str(res)], "error", ("--overwrite",), protect=protect_res)
    b.case("mri benchmark --strategies '' over an earlier table", "data lost + silent: an empty table replaced 3 rows",
           [*bench, "--strategies", "", "--out", str(res), "--overwrite"], "error",
           ("strategies", "empty"), protect=protect_res)
    prior_run = w / "runs" / "prior16"
    train = ["mri", "train-prior", "--data", str(fx["train"]), "--out", str(prior_run), "--size", "16", "--steps",
             "4", "--batch-size", "4", "--checkpoint-every", "2"]
    must(b.gendiff(*train))
    b.case("train-prior --resume with another --size / --batch-size", "data lost: resumed silently, config "
           "rewritten", [*train, "--size", "24", "--steps", "6", "--batch-size", "2", "--resume"],
           "error", ("size (saved 16, now 24)", "batch_size (saved 4, now 2)"),
           protect=(prior_run / "config.yaml", prior_run / "model"))

    # ---- half-written state ----
    half = w / "minari" / "battery" / "half" / "random-v0" / "data"
    half.mkdir(parents=True)  # what a kill in the Minari write used to leave (the kill itself: kill cases)
    b.case("an empty data/ folder is not a dataset", "half-state counted as a dataset",
           ["offline", "dataset-stats", "--dataset-id", "battery/half/random-v0"], "error",
           ("no local Minari dataset", "interrupted write"))
    b.case("make-dataset over a half-written folder needs no --force", "half-state: 'already exists; pass --force'",
           ["offline", "make-dataset", "--env", "Hopper-v5", "--level", "random", "--steps", "100", "--dataset-id",
            "battery/half/random-v0", "--no-progress"], "ok",
           check=lambda out: (b.gendiff("offline", "dataset-stats", "--dataset-id", "battery/half/random-v0")[0] == 0,
                          "dataset-stats reads it"))

    # ---- silent wrong results ----
    b.case("gorl train --steps 0", "silent: saved an untrained model and reported returns",
           ["gorl", "train", "--env", "gendiff/TwoModes-v0", "--steps", "0", "--out", str(w / "runs" / "gorl0")],
           "error", ("steps", "positive"), check=None)
    b.case("a prior whose scheduler _class_name is unknown", "silent: became DDIM",
           ["mri", "benchmark", "--prior", str(fx["prior_bad_scheduler"]), "--data", str(fx["test"]),
            "--out", str(w / "res" / "x1.json")], "error", ("NoSuchScheduler", "scheduler_config.json"))
    b.case("make-dataset on a discrete-action env (CartPole)", "silent: random data scored 92.2",
           ["offline", "make-dataset", "--env", "CartPole-v1", "--level", "random", "--steps", "100",
            "--dataset-id", "battery/cartpole/made-v0"], "error", ("Discrete", "continuous"))
    b.case("train-agent on a discrete dataset", "traceback at evaluation",
           ["offline", "train-agent", "--dataset-id", "battery/cartpole/random-v0", "--steps", "5",
            "--out", str(w / "res" / "cartpole.json")], "error", ("Discrete", "continuous"))
    for cmd in (["offline", "make-dataset", "--env", "Hopper-v5", "--level", "random", "--steps", "50"],
                ["offline", "dataset-stats"], ["offline", "train-agent", "--out", str(w / "res" / "t.json")]):
        b.case(f"{cmd[1]} --dataset-id ../outside-v0", "silent: Minari made folders outside its path",
               [*cmd, "--dataset-id", "../outside-v0"], "error", ("../outside-v0", "must look like"),
               check=None)
    outside = [p for p in (w / "outside-v0", w.parent / "outside-v0") if p.exists()]
    b.judged("nothing was created outside the Minari path", "silent: folders outside", "bad",
             "ls <work>/outside-v0", [(not outside, f"outside folders: {[str(p) for p in outside]}")])

    # ---- tracebacks ----
    for flag, value, needle in (("--num-inference-steps", "0", "steps"), ("--slices", "0", "slices"), ("--bootstrap", "0",
                                "bootstrap"), ("--device", "tpu9", "tpu9"), ("--device", "cuda", "cuda"),
                                ("--num-particles", "0", "particles"), ("--acquisition-window", "0.5,0.2", "window"),
                                ("--acceleration", "nan", "finite")):
        b.case(f"mri benchmark {flag} {value}", "traceback (ZeroDivisionError / IndexError / device)",
               [*bench, "--out", str(w / "res" / "x2.json"), flag, value], "error", (needle,))
    for name, needles in (("prior_truncated", ("diffusion_pytorch_model.safetensors", "model")),
                          ("prior_pickle", ("model",)), ("prior_pickle_bin", ("model", "pickle")),
                          ("prior_bad_config", ("config",))):
        b.case(f"a prior with {name.removeprefix('prior_').replace('_', ' ')} weights/config", "traceback",
               ["mri", "benchmark", "--prior", str(fx[name]), "--data", str(fx["test"]),
                "--out", str(w / "res" / "x3.json")], "error", (str(fx[name]), *needles))
    b.judged("no pickled code ran", "malicious pickle", "bad", "ls pwned.txt",
             [(not (w / "pwned.txt").exists(), "pwned.txt absent")])
    b.case("llm train --model with an invalid config.json", "traceback",
           ["llm", "train", "--model", str(fx["llm_bad"]), "--out", str(w / "runs" / "llm_bad"), "--steps", "1"],
           "error", (str(fx["llm_bad"]),))
    b.case("train-prior --lr 1e30", "traceback (the NaN check raised)",
           ["mri", "train-prior", "--data", str(fx["train"]), "--out", str(w / "runs" / "nan"), "--size", "16",
            "--steps", "50", "--batch-size", "4", "--lr", "1e30"], "error",
           ("loss is nan", "learning rate"))

    # ---- misleading messages ----
    b.case("--config pointing at a folder", "said 'does not exist'",
           ["mri", "benchmark", "--config", str(w / "mri")], "error", ("is a folder",))
    b.case("mri benchmark --batch-slices 0", "said 'range() arg 3 must not be zero'",
           [*bench, "--out", str(w / "res" / "x4.json"), "--batch-slices", "0"], "error", ("batch_slices",))
    diff_run = w / "runs" / "diffusion"
    diffusion = ["offline", "train-diffusion", "--dataset-id", ds_id, "--out-dir", str(diff_run), "--horizon", "8",
                 "--stride", "4", "--dim", "8", "--dim-mults", "1,2", "--train-steps", "4", "--batch-size", "8",
                 "--no-progress"]
    must(b.gendiff(*diffusion))
    b.case("train-diffusion over an earlier run: the hint names real options", "hint named resume=True on a command "
           "without it", diffusion, "error", ("--overwrite", "--resume"),
           protect=(diff_run / "pipeline", diff_run / "train" / "model"))
    b.case("train-diffusion --resume (the hinted option exists)", "hint named resume=True",
           [*diffusion, "--train-steps", "6", "--resume"],
           "ok", check=lambda out: (json.loads((diff_run / "train" / "train_log.jsonl").read_text().splitlines()[-1])
                                ["step"] == 6, "resumed to step 6"))
    bad_ckpt = w / "runs" / "prior_badckpt"
    shutil.copytree(prior_run, bad_ckpt)
    (bad_ckpt / "checkpoint-4" / "optimizer.pt").write_bytes(pickle.dumps({"state": Evil()}))
    b.case("resume from a checkpoint whose optimizer.pt is a foreign pickle", "torch's 'weights_only=False' "
           "hint reached the user", [*train, "--out", str(bad_ckpt), "--steps", "6", "--resume"], "error",
           ("checkpoint-4", "pickled"), protect=(bad_ckpt / "checkpoint-4",))
    b.case("a NaN in k-space", "named only the file's base name",
           ["mri", "benchmark", "--prior", str(fx["prior"]), "--data", str(fx["nan"]), "--out",
            str(w / "res" / "x5.json"), *opts], "error", (str(fx["nan"] / "nan_file.h5"), "NaN"))
    mc = w / "res" / "multicoil.json"
    b.case("mri benchmark --challenge multicoil", "missing option: multi-coil data could not be benchmarked",
           ["mri", "benchmark", "--prior", str(fx["prior"]), "--data", str(fx["multicoil"]), "--challenge",
            "multicoil", "--out", str(mc), *opts], "ok",
           check=lambda out: (rows(mc) == ["ads", "equispaced"] and json.loads(mc.read_text())["config"]["challenge"]
                          == "multicoil", f"rows {rows(mc)}"))
    b.case("mri benchmark of multi-coil files without --challenge", "(a clear error, not garbage)",
           ["mri", "benchmark", "--prior", str(fx["prior"]), "--data", str(fx["multicoil"]), "--out",
            str(w / "res" / "x6.json"), *opts], "error", ("singlecoil", "mc.h5"))


# --------------------------------------------------------------------------------------------------
# kill -9
# --------------------------------------------------------------------------------------------------
def _dataset_state(b: Battery, ds_id: str) -> tuple[int, str]:
    code, out = b.gendiff("offline", "dataset-stats", "--dataset-id", ds_id)
    return code, out


def kill_cases(b: Battery, fx: dict[str, Path]) -> None:
    w = b.work
    minari = w / "minari"
    # 1. make-dataset killed in the SAC phase of a --force replacement: the old dataset stays, the rerun works
    ds_id, folder = "battery/hopper/kill-v0", minari / "battery" / "hopper" / "kill-v0"
    must(b.gendiff("offline", "make-dataset", "--env", "Hopper-v5", "--level", "random", "--steps", "300",
                     "--dataset-id", ds_id, "--no-progress"))
    before = digest(folder)
    stage = minari / ".gendiff_staging" / ds_id
    proc = b.start("offline", "make-dataset", "--env", "Hopper-v5", "--level", "medium", "--steps", "300",
                   "--sac-steps", "100000", "--learning-starts", "200", "--check-every", "100000", "--dataset-id",
                   ds_id, "--force")
    wait_for(proc, stage.exists, 120, "the staging folder")
    time.sleep(8)  # well inside SAC's 100k steps
    in_sac = not (stage / "minari").exists()
    alive = kill9(proc)
    intact = digest(folder) == before
    code, out = _dataset_state(b, ds_id)
    rerun = b.gendiff("offline", "make-dataset", "--env", "Hopper-v5", "--level", "medium", "--steps", "300",
                      "--sac-steps", "400", "--learning-starts", "200", "--check-every", "200", "--dataset-id", ds_id,
                      "--force", "--no-progress")
    level = json.loads(rerun[1][rerun[1].index("{"):rerun[1].rindex("}") + 1]).get("gendiff_level") \
        if rerun[0] == 0 else None
    b.judged("kill -9 in make-dataset's SAC phase (--force over an existing dataset)", "data lost: a kill mid-way "
             "lost the dataset", "kill", "make-dataset --level medium --force; kill -9 after 8 s of SAC",
             [(alive and in_sac, "killed while SAC trained"), (intact, "old dataset byte-identical"),
              (code == 0, "dataset-stats reads it"), (rerun[0] == 0 and level == "medium",
                                                      "rerun --force completes (level medium)"),
              (not stage.exists(), "no staging left after the rerun")],
             f"after the kill: dataset-stats exit {code}; rerun --force exit {rerun[0]} (level {level})", code)

    # 2. make-dataset killed in the Minari write: over an existing dataset (--force) and for a new id
    for label, new_id, force in (("over an existing dataset (--force)", ds_id, True),
                                 ("of a new id", "battery/hopper/killnew-v0", False)):
        folder = minari / new_id
        before = digest(folder)
        stage = minari / ".gendiff_staging" / new_id
        argv = ["offline", "make-dataset", "--env", "Hopper-v5", "--level", "random", "--steps", "60000",
                "--dataset-id", new_id, "--no-progress", *(["--force"] if force else [])]
        proc = b.start(*argv)
        wait_for(proc, lambda d=stage / "minari" / new_id / "data": d.exists(), 300, "the Minari write")
        alive = kill9(proc)
        half = (stage / "minari" / new_id / "data").exists()
        intact = digest(folder) == before
        code, out = _dataset_state(b, new_id)
        exists_now = b.python(f"from gendiff.offline.datasets import dataset_exists; print(dataset_exists({new_id!r}))")
        rerun = b.gendiff(*argv[:7], "600", *argv[8:])
        after = _dataset_state(b, new_id)[0]
        checks = [(alive and half, "killed inside the Minari write (data/ being written)"),
                  (intact, "earlier state intact" if force else "no folder at the id")]
        if force:
            checks.append((code == 0, "the old dataset still loads"))
        else:
            checks.append((exists_now.strip() == "False" and code != 0, "the half-written dataset does not count"))
        checks += [(rerun[0] == 0, f"rerun{' --force' if force else ' without --force'} works"),
                   (after == 0, "the new dataset loads")]
        b.judged(f"kill -9 in make-dataset's Minari write {label}", "half-state: an empty data/ counted as a "
                 "dataset", "kill", "make-dataset --steps 60000; kill -9 once data/ appears", checks,
                 f"after the kill: dataset-stats exit {code}, dataset_exists {exists_now.strip()}; rerun exit "
                 f"{rerun[0]}", code)

    # 3. train-prior, train-diffusion and llm train: kill a replacement (--overwrite) and a fresh run
    specs = [  # name, argv, out flag, steps flag, (old run's steps, killed run's steps, resumed steps), checkpoint
        # folder, final weights, log
        ("train-prior", ["mri", "train-prior", "--data", str(fx["train"]), "--size", "16", "--batch-size", "4",
                         "--checkpoint-every", "20"], "--out", "--steps", (4, 4000, 40), "",
         "model/diffusion_pytorch_model.safetensors", "train_log.jsonl"),
        ("train-diffusion", ["offline", "train-diffusion", "--dataset-id", "battery/hopper/random-v0", "--horizon",
                             "8", "--stride", "4", "--dim", "8", "--dim-mults", "1,2", "--batch-size", "8",
                             "--checkpoint-every", "20", "--no-progress"], "--out-dir", "--train-steps",
         (4, 4000, 40), "train", "pipeline/unet/diffusion_pytorch_model.safetensors", "train/train_log.jsonl"),
        ("llm train", ["llm", "train", "--sft-steps", "10", "--group-size", "4", "--prompts-per-step", "2",
                       "--max-new-tokens", "5", "--lr", "1e-3", "--checkpoint-every", "2", "--no-progress"], "--out",
         "--steps", (2, 400, 6), "", "final/model.safetensors", "log.jsonl"),
    ]
    for name, base, out_flag, steps_flag, (short, long, full), sub, final, log in specs:
        tag = name.replace(" ", "_")
        old = w / "runs" / f"kill_{tag}_old"
        must(b.gendiff(*base, out_flag, str(old), steps_flag, str(short)))
        before = digest(old)
        run = old / sub if sub else old  # the training run's folder; a replacement is built beside it
        stage = run.parent / f".{run.name}.staging"
        proc = b.start(*base, out_flag, str(old), steps_flag, str(long), "--overwrite")
        wait_for(proc, lambda s=stage: any(s.glob("checkpoint-*")), 300, "a staged checkpoint")
        alive = kill9(proc)
        intact = digest(old) == before
        rerun = b.gendiff(*base, out_flag, str(old), steps_flag, str(short + 2), "--overwrite")
        steps_after = last_step(old / log)
        # a fresh run killed after its first checkpoint, then resumed to the full count
        fresh = w / "runs" / f"kill_{tag}_fresh"
        proc = b.start(*base, out_flag, str(fresh), steps_flag, str(long))
        wait_for(proc, lambda f=fresh, sub=sub: any((f / sub).glob("checkpoint-*")), 300, "a checkpoint")
        alive2 = kill9(proc)
        killed_at = sorted(int(p.name.split("-")[1]) for p in (fresh / sub).glob("checkpoint-*"))
        no_final = not (fresh / final).exists()
        refused = b.gendiff(*base, out_flag, str(fresh), steps_flag, str(full))
        resumed = b.gendiff(*base, out_flag, str(fresh), steps_flag, str(full), "--resume")
        b.judged(f"kill -9 in {name} (an --overwrite replacement, then a fresh run)", "old state lost; no resume",
                 "kill", f"{name} {out_flag} DIR --overwrite; kill -9 at the first staged checkpoint",
                 [(alive, "the replacement was killed while training"), (intact, "the earlier run byte-identical"),
                  (rerun[0] == 0 and steps_after == short + 2, f"rerun --overwrite completes ({steps_after} steps)"),
                  (alive2 and no_final, f"a fresh run killed at checkpoint {killed_at}, no final model"),
                  (refused[0] == 2 and "--resume" in error_line(refused[1]), "a rerun without --resume is refused"),
                  (resumed[0] == 0 and last_step(fresh / log) == full and (fresh / final).exists(),
                   f"--resume reaches {last_step(fresh / log)} of {full} steps")],
                 f"killed at checkpoint {killed_at[-1] if killed_at else None}; --resume exit {resumed[0]}, "
                 f"last step {last_step(fresh / log)} of {full}", resumed[0])


def last_step(log: Path) -> int | None:
    if not log.exists():
        return None
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    return int(json.loads(lines[-1])["step"]) if lines else None


# --------------------------------------------------------------------------------------------------
# Same seed, same weights
# --------------------------------------------------------------------------------------------------
def seed_cases(b: Battery, fx: dict[str, Path]) -> None:
    w = b.work / "seeds"
    gorl_cfg = b.work / "gorl_small.yaml"
    gorl_cfg.write_text("stage_steps: 128\nrecent_steps: 256\ndecoder_fit_steps: 5\ndecoder_width: 32\n"
                        "decoder_depth: 1\ndecoder_batch_size: 32\n")
    ppo_cfg = b.work / "ppo_small.yaml"
    ppo_cfg.write_text("num_envs: 2\nnum_steps: 64\nnum_minibatches: 2\nupdate_epochs: 1\n")
    commands = {
        "train-prior": (["mri", "train-prior", "--data", str(fx["train"]), "--size", "16", "--steps", "5",
                         "--batch-size", "4", "--out"], "model/diffusion_pytorch_model.safetensors"),
        "train-prior (images)": (["train-prior", "--data", "digits", "--size", "8", "--steps", "5", "--batch-size", "8",
                                  "--out"], "model/diffusion_pytorch_model.safetensors"),
        "train-diffusion": (["offline", "train-diffusion", "--dataset-id", "battery/hopper/random-v0", "--horizon", "8",
                             "--stride", "4", "--dim", "8", "--dim-mults", "1,2", "--train-steps", "5",
                             "--batch-size", "8", "--no-progress", "--out-dir"],
                            "pipeline/unet/diffusion_pytorch_model.safetensors"),
        "offline train-agent (td3bc, unguided synthetic data)": (
            ["offline", "train-agent", "--dataset-id", "battery/hopper/random-v0", "--synthetic", "unguided",
             "--steps", "20", "--batch-size", "32", "--real-per-batch", "16", "--diffusion-train-steps", "3",
             "--horizon", "8", "--sample-horizon", "8", "--num-inference-steps", "2", "--num-synthetic", "64",
             "--eval-every", "0", "--eval-episodes", "1", "--no-progress", "--out"], "results.safetensors"),
        "gorl train (gorl_fm)": (["gorl", "train", "--env", "gendiff/TwoModes-v0", "--algo", "gorl_fm", "--steps",
                                  "256", "--gorl-config", str(gorl_cfg), "--ppo-config", str(ppo_cfg),
                                  "--eval-every", "128", "--eval-episodes", "1", "--final-eval-episodes", "1",
                                  "--no-progress", "--out"], "model/model.safetensors"),
        "llm train": (["llm", "train", "--sft-steps", "10", "--steps", "2", "--group-size", "4", "--prompts-per-step",
                       "2", "--max-new-tokens", "5", "--lr", "1e-3", "--no-progress", "--out"],
                      "final/model.safetensors"),
    }
    for k, (name, (argv, weights)) in enumerate(commands.items()):
        runs = []
        for i in (1, 2):
            out = w / f"cmd{k}_run{i}"
            target = out / "results.json" if weights == "results.safetensors" else out
            code, text = b.gendiff(*argv, str(target))
            runs.append((code, out / weights, text))
        diff = b.python(f"""
from safetensors.torch import load_file
a, b = load_file({str(runs[0][1])!r}), load_file({str(runs[1][1])!r})
assert sorted(a) == sorted(b)
print(len(a), sum(v.numel() for v in a.values()), max(float((a[k].double() - b[k].double()).abs().max()) for k in a))
""") if all(c == 0 for c, _, _ in runs) else "0 0 nan"
        tensors, numel, maxdiff = diff.split()
        b.judged(f"same seed twice: {name}", "not reproducible (U-Net built before the seed)", "seed",
                 "gendiff " + " ".join(argv[:3]) + " ... twice, seed 0",
                 [(all(c == 0 for c, _, _ in runs), "both runs exit 0"),
                  (maxdiff == "0.0", f"{tensors} tensors, {numel} weights, max |difference| {maxdiff}")],
                 f"max |w1 - w2| = {maxdiff} over {numel} weights", runs[-1][0])


# --------------------------------------------------------------------------------------------------
def write_report(results: list[Result], out: Path, wall: float, groups: list[str]) -> None:
    import torch

    tracebacks = sum("traceback" in r.verdict for r in results)
    lost = sum("data lost" in r.verdict or "intact" in r.verdict for r in results)
    wrong = sum("wrong result" in r.verdict for r in results)
    failed = sum(r.verdict != "ok" for r in results)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    payload = {"machine": machine, "groups": groups, "wall_s": wall, "cases": len(results), "failed": failed,
               "tracebacks": tracebacks, "data_lost": lost, "wrong_results": wrong,
               "results": [r.__dict__ for r in results]}
    beside(out, ".json").parent.mkdir(parents=True, exist_ok=True)
    beside(out, ".json").write_text(json.dumps(payload, indent=2))
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = [f"# Issue 32 battery: {len(results)} cases, {failed} failed; {tracebacks} tracebacks, {lost} data lost, "
             f"{wrong} silent wrong results", "",
             f"Machine: {machine}, OMP_NUM_THREADS=1; wall {wall / 60:.1f} min; groups {', '.join(groups)}. "
             "Rerun: `.venv/bin/python benchmarks/reliability/battery.py` (see README.md).", "",
             "| # | group | case | issue's failure | exit | first line of the message | verdict |",
             "|---:|---|---|---|---:|---|---|"]
    for i, r in enumerate(results, 1):
        note = f" ({'; '.join(r.notes[1:])})" if r.group != "bad" and len(r.notes) > 1 else ""
        lines.append(f"| {i} | {r.group} | {esc(r.case)} | {esc(r.issue)} | {r.code} | {esc(r.message[:220])} | "
                     f"{esc(r.verdict)}{esc(note)} |")
    beside(out, ".md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", default="bad,kill,seed", help="comma list of bad, kill, seed")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "reliability" / "battery"),
                    help="report path without suffix (.json and .md are written)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    a = ap.parse_args()
    groups = [g for g in a.groups.split(",") if g]
    work = Path(tempfile.mkdtemp(prefix="gendiff_battery_"))
    b, t0 = Battery(work), time.perf_counter()
    try:
        fx = make_fixtures(b)
        for g in groups:
            {"bad": bad_input_cases, "kill": kill_cases, "seed": seed_cases}[g](b, fx)
    finally:
        write_report(b.results, Path(a.out), time.perf_counter() - t0, groups)
        if a.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    failed = [r for r in b.results if r.verdict != "ok"]
    print(f"{len(b.results)} cases, {len(failed)} failed -> {a.out}.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
