"""Synthetic fastMRI-format single-coil knee data (no download needed).

``write_synthetic_dataset`` writes .h5 files in the layout of the public fastMRI knee single-coil set
that ``fastmri.data.SliceDataset(root, "singlecoil")`` reads back:

- ``kspace`` complex64 ``[slices, size, size]``: centred orthonormal FFT (``fastmri.fft2c``) of a
  complex knee-like phantom (magnitude x smooth phase);
- ``reconstruction_esc`` float32 ``[slices, size, size]``: the phantom's magnitude;
- attrs ``max``, ``norm`` (of the volume's reconstruction), ``acquisition`` ("CORPD_FBK"), ``patient_id``;
- ``ismrmrd_header``: ISMRMRD XML (with its namespace) holding the encoded / recon matrix sizes and
  the ``kspace_encoding_step_1`` limits that SliceDataset queries.

Phantoms are coronal-knee-like: soft tissue with a fat rim, femur with two condyles, tibia (marrow
with trabecular texture inside a dark cortical rim), a bright cartilage / fluid band along the joint
line and dark ligaments. Every volume draws its own anatomy; across a volume the slice position
``t in [-1, 1]`` changes bone widths, positions, texture and phase smoothly. Like real data, each
volume has its own raw intensity scale (around 1e-4), so loaders must normalise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import fastmri
import h5py
import numpy as np
import torch

from gendiff.config import check_numbers
from gendiff.io import atomic_path

__all__ = ["ismrmrd_header", "make_phantom", "make_volume", "write_fastmri_volume", "write_synthetic_dataset"]

_NS = "http://www.ismrm.org/ISMRMRD"


def _smooth_field(rng: np.random.Generator, size: int, cutoff: float) -> np.ndarray:
    """Gaussian random field ``[size, size]`` with unit std, low-passed at ``cutoff`` cycles/pixel."""
    f = np.fft.fftfreq(size)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    spec = np.fft.fft2(rng.standard_normal((size, size))) * np.exp(-f2 / (2 * cutoff**2))
    field = np.fft.ifft2(spec).real
    return (field - field.mean()) / (field.std() + 1e-12)


def _ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, a: float, b: float,
             angle: float = 0.0) -> np.ndarray:
    """Soft (about one pixel ramp) indicator of an ellipse on the grid ``xx, yy`` in ``[-1, 1]``."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    pixels = xx.shape[0] / 2.0  # pixels per unit length
    return np.clip((1.0 - r) * min(a, b) * pixels + 0.5, 0.0, 1.0)


def _volume_params(rng: np.random.Generator) -> dict[str, np.ndarray | float]:
    """Random anatomy of one volume (each entry is a base value and a slope in slice position t)."""
    u = rng.uniform
    return {
        "body": np.array([u(0.58, 0.72), u(0.85, 0.95)]),  # envelope semi-axes
        "fat": u(0.04, 0.08),  # fat-rim thickness
        "joint_y": u(-0.08, 0.08), "gap": u(0.05, 0.08),
        "femur_w": u(0.32, 0.40), "tibia_w": u(0.30, 0.38), "cortex": u(0.025, 0.045),
        "shift": np.array([u(-0.05, 0.05), u(-0.08, 0.08)]),  # x shift at t=0 and its slope in t
        "tilt": u(-0.12, 0.12),
        "levels": np.array([u(0.35, 0.5), u(0.8, 0.95), u(0.6, 0.8), u(0.55, 0.75), u(0.05, 0.15)]),
        "phase": rng.normal(0.0, 0.35, size=(2, 4)),  # (base, slope) x (const, x, y, r^2)
        "ligaments": np.array([[u(-0.1, 0.1), u(0.4, 0.8)] for _ in range(2)]),
    }


def _render(p: dict, size: int, t: float, tex: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Complex slice ``[size, size]`` (max magnitude <= 1) of anatomy ``p`` at slice position ``t``."""
    lin = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(lin, lin, indexing="ij")  # rows = y (superior -> inferior), cols = x
    soft, fat, marrow, cart, dark = p["levels"]
    width = np.sqrt(max(1.0 - 0.8 * t**2, 0.05))  # bones narrow toward the volume's edges
    sx = p["shift"][0] + p["shift"][1] * t
    jy, gap, cx = p["joint_y"], p["gap"], p["cortex"]
    img = np.zeros((size, size))

    def paint(mask: np.ndarray, level: float) -> None:
        nonlocal img
        img = img * (1.0 - mask) + level * mask

    a, b = p["body"] * (0.9 + 0.1 * width)
    paint(_ellipse(xx, yy, sx, 0.0, a, b, p["tilt"]), fat)
    paint(_ellipse(xx, yy, sx, 0.0, a - p["fat"], b - p["fat"], p["tilt"]), soft)
    paint(_ellipse(xx, yy, sx, jy, 0.8 * p["femur_w"] * width, gap * 1.6), cart)  # cartilage / fluid
    bones = [  # (cx, cy, a, b): femur shaft, two condyles, tibial plateau
        (sx, jy - gap / 2 - 0.48, p["femur_w"] * width, 0.48),
        (sx - 0.16 * width, jy - gap / 2 - 0.13, 0.17 * width, 0.13),
        (sx + 0.16 * width, jy - gap / 2 - 0.13, 0.17 * width, 0.13),
        (sx, jy + gap / 2 + 0.5, p["tibia_w"] * width, 0.5),
    ]
    for bx, by, ba, bb in bones:
        paint(_ellipse(xx, yy, bx, by, ba, bb), dark)  # cortical bone
    for bx, by, ba, bb in bones:
        paint(_ellipse(xx, yy, bx, by, max(ba - cx, 0.02), max(bb - cx, 0.02)), marrow)
    for lx, ang in p["ligaments"]:
        paint(_ellipse(xx, yy, sx + lx * width, jy, 0.025, 0.16, ang * np.sign(lx)), dark)

    body = _ellipse(xx, yy, sx, 0.0, a, b, p["tilt"])
    trabecular = np.abs(img - marrow) < 1e-6
    img = img * (1.0 + 0.12 * tex * body + 0.18 * fine * trabecular)
    img = np.clip(img, 0.0, None) * body

    c = p["phase"][0] + p["phase"][1] * t  # smooth phase: const + linear + quadratic
    phase = c[0] + c[1] * xx + c[2] * yy + c[3] * (xx**2 + yy**2)
    img = img / max(img.max(), 1e-12)
    return (img * np.exp(1j * phase)).astype(np.complex64)


def make_volume(size: int, slices: int, rng: np.random.Generator) -> np.ndarray:
    """A knee-like volume whose anatomy changes smoothly from slice to slice.

    Args:
        size: image height and width.
        slices: number of slices.
        rng: numpy random generator (fixes the anatomy, texture and phase).

    Returns:
        complex64 ``[slices, size, size]``, each slice with max magnitude 1.
    """
    if size < 16 or slices < 1:
        raise ValueError(f"need size >= 16 and slices >= 1, got size={size}, slices={slices}")
    p = _volume_params(rng)
    tex = [_smooth_field(rng, size, 0.04) for _ in range(2)]
    fine = [_smooth_field(rng, size, 0.18) for _ in range(2)]
    ts = np.linspace(-0.8, 0.8, slices) if slices > 1 else np.zeros(1)
    out = np.empty((slices, size, size), dtype=np.complex64)
    for i, t in enumerate(ts):  # texture rotates smoothly between two fields
        c, s = np.cos(np.pi / 2 * (t + 1) / 2), np.sin(np.pi / 2 * (t + 1) / 2)
        out[i] = _render(p, size, float(t), c * tex[0] + s * tex[1], c * fine[0] + s * fine[1])
    return out


def make_phantom(size: int, rng: np.random.Generator) -> np.ndarray:
    """One knee-like complex slice: complex64 ``[size, size]`` with max magnitude 1."""
    return make_volume(size, 1, rng)[0]


def ismrmrd_header(enc: tuple[int, int], recon: tuple[int, int], fov_mm: float = 140.0) -> bytes:
    """ISMRMRD XML header with the elements ``fastmri.data.SliceDataset`` queries.

    Args:
        enc: k-space matrix ``(H, W)``; W is the phase-encoding (mask) axis.
        recon: reconstruction matrix ``(R_h, R_w)``.
    """
    h, w = enc
    xml = f"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="{_NS}">
  <encoding>
    <encodedSpace>
      <matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{fov_mm}</x><y>{fov_mm}</y><z>3.0</z></fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize><x>{recon[0]}</x><y>{recon[1]}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{fov_mm}</x><y>{fov_mm}</y><z>3.0</z></fieldOfView_mm>
    </reconSpace>
    <trajectory>cartesian</trajectory>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>{w - 1}</maximum><center>{w // 2}</center>
      </kspace_encoding_step_1>
      <slice><minimum>0</minimum><maximum>0</maximum><center>0</center></slice>
    </encodingLimits>
  </encoding>
</ismrmrdHeader>
"""
    return xml.encode("utf-8")


def write_fastmri_volume(path: Path, vol: np.ndarray, patient_id: str, acquisition: str = "CORPD_FBK",
                         extra_attrs: dict | None = None) -> None:
    """Write one complex image volume ``[S, H, W]`` as a fastMRI single-coil file (k-space = fft2c(vol)).

    ``extra_attrs`` are stored as HDF5 attributes beside ``max``, ``norm``, ``acquisition``, ``patient_id``.
    """
    img = torch.view_as_real(torch.from_numpy(vol))  # [S, H, W, 2]
    kspace = torch.view_as_complex(fastmri.fft2c(img).contiguous()).numpy().astype(np.complex64)
    recon = np.abs(vol).astype(np.float32)
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=kspace)
        hf.create_dataset("reconstruction_esc", data=recon)
        hf.create_dataset("ismrmrd_header", data=ismrmrd_header(vol.shape[1:], recon.shape[1:]))
        hf.attrs["max"] = float(recon.max())
        hf.attrs["norm"] = float(np.linalg.norm(recon))
        hf.attrs["acquisition"] = acquisition
        hf.attrs["patient_id"] = patient_id
        for key, value in (extra_attrs or {}).items():
            hf.attrs[key] = value


def write_synthetic_dataset(
    out_dir: str | Path, volumes: int, slices: int, size: int = 128, seed: int = 0,
    challenge: Literal["singlecoil"] = "singlecoil", overwrite: bool = False,
) -> list[Path]:
    """Write ``volumes`` fastMRI-format single-coil files ``synthetic_XXXX.h5`` into ``out_dir``.

    Volume ``v`` is drawn from ``np.random.default_rng([seed, v])``, so adding volumes leaves the
    existing ones unchanged.

    Args:
        out_dir: folder (created if missing).
        volumes: number of files.
        slices: slices per file.
        size: k-space and image size (square).
        seed: base seed.
        challenge: only "singlecoil" is written.
        overwrite: replace existing files of the same names.

    Returns:
        The written paths, in order.

    Raises:
        FileExistsError: a target file exists and ``overwrite`` is False (nothing is written).
    """
    if challenge != "singlecoil":
        raise ValueError(f"only challenge='singlecoil' can be synthesised, got {challenge!r}")
    if volumes < 1:
        raise ValueError(f"volumes must be >= 1, got {volumes}")
    out = Path(out_dir)
    paths = [out / f"synthetic_{v:04d}.h5" for v in range(volumes)]
    existing = [p.name for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {existing}; pass --overwrite (overwrite=True) to replace "
                              "them")
    out.mkdir(parents=True, exist_ok=True)
    for v, path in enumerate(paths):
        rng = np.random.default_rng([seed, v])
        scale = 10.0 ** rng.uniform(-4.5, -3.5)  # raw scanner-like intensity scale
        vol = (make_volume(size, slices, rng) * scale).astype(np.complex64)
        pid = hashlib.sha1(f"{seed}-{v}".encode()).hexdigest()[:16]
        with atomic_path(path) as tmp:  # an interrupted write leaves the old file (or none), never half a file
            write_fastmri_volume(tmp, vol, pid)
    return paths


@dataclass
class SyntheticConfig:
    """``gendiff mri make-synthetic`` (configs/mri_make_synthetic.yaml)."""

    out: str = ""
    volumes: int = 4
    slices: int = 8
    size: int = 128
    seed: int = 0
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_numbers(self, positive=("volumes", "slices", "size"))


def make_synthetic(cfg: SyntheticConfig) -> list[Path]:
    if not cfg.out:
        raise ValueError("make-synthetic needs --out DIR")
    paths = write_synthetic_dataset(cfg.out, volumes=cfg.volumes, slices=cfg.slices, size=cfg.size, seed=cfg.seed,
                                    overwrite=cfg.overwrite)
    print(f"wrote {len(paths)} fastMRI-format single-coil files to {cfg.out}")
    return paths
