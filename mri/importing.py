"""Import real magnitude MR images (NIfTI, DICOM, .npy, .png) as fastMRI-format single-coil files.

Most MRI users hold DICOM or NIfTI magnitude images, not raw k-space. ``gendiff mri import`` turns them into
the files every other ``gendiff mri`` command reads (the layout of ``mri/synthetic.py``):

1. Read one *volume* per input (:func:`read_volume`): a NIfTI file (nibabel; 2D, 3D, or 4D with a chosen
   frame), a DICOM file (pydicom; one image or a multi-frame file; the Modality must be MR), a folder of DICOM
   files of one series (sorted by InstanceNumber), an .npy array ``[H, W]`` or ``[S, H, W]``, or a folder of
   .png images (one slice each, sorted by name). Result: float64 magnitudes ``[S, H, W]``, slices along
   ``slice_axis`` for NIfTI (default: the last).
2. Fit every slice to ``size x size`` (:func:`fit_square`): zero-pad the shorter side (no distortion), then
   resample with ``skimage.transform.resize`` (anti-aliased, linear) or, with ``fit="pad"``, only zero-pad.
3. Optionally give each slice a smooth random phase (:func:`smooth_phase`; seeded per volume, the model and
   its coefficients are stored in the file's attrs): a magnitude image has Hermitian-symmetric k-space, so
   line +l would tell everything about line -l, which a real acquisition never does.
4. k-space = ``fastmri.fft2c`` of the complex image; ``reconstruction_esc`` = the magnitude; attrs ``max``,
   ``norm``, ``acquisition``, ``patient_id`` (a hash of the source path, never the DICOM PatientID); the
   ISMRMRD header of :func:`gendiff.mri.synthetic.ismrmrd_header`. One file per volume.
5. With ``split`` (fractions for train, val, test), whole volumes go to ``out/train``, ``out/val``,
   ``out/test`` (:func:`split_volumes`): a volume's slices are never on two sides. ``out/split.json``
   lists the assignment.

nibabel and pydicom are the optional extra ``gendiff[mri-io]``; a missing one raises ``ModuleNotFoundError``
that names the pip command.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from gendiff.io import atomic_path
from gendiff.mri.synthetic import write_fastmri_volume

__all__ = ["ImportConfig", "fit_square", "import_images", "read_volume", "smooth_phase", "split_volumes"]

Fit = Literal["resample", "pad"]
_NIFTI = (".nii", ".nii.gz")
_DICOM = (".dcm", ".dicom", ".ima")
SPLITS = ("train", "val", "test")
PHASE_MODEL = "phi = c0 + c1 x + c2 y + c3 (x^2 + y^2), x, y in [-1, 1] (columns, rows)"


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"reading this format needs {module}: pip install 'gendiff[mri-io]'") from None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _is_dicom(path: Path) -> bool:
    if _suffix(path) in _DICOM:
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _read_nifti(path: Path, slice_axis: int, frame_axis: int | None, frame: int) -> np.ndarray:
    nib = _need("nibabel")
    try:
        data = np.asarray(nib.load(str(path)).get_fdata(), dtype=np.float64)
    except Exception as err:  # nibabel raises several types for a broken file
        raise ValueError(f"{path}: not a readable NIfTI file ({err})") from None
    while data.ndim > 3 and data.shape[-1] == 1:  # e.g. [128, 128, 10, 1]: a 3D volume stored as 4D
        data = data[..., 0]
    if data.ndim == 4:
        if frame_axis is None:
            raise ValueError(f"{path}: 4D image {data.shape}; choose one 3D volume with --frame-axis AXIS "
                             f"(and --frame INDEX, default 0)")
        if not -4 <= frame_axis < 4 or not 0 <= frame < data.shape[frame_axis]:
            raise ValueError(f"{path}: frame {frame} on axis {frame_axis} is outside the shape {data.shape}")
        data = np.take(data, frame, axis=frame_axis)
    if data.ndim == 2:
        return data[None]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 2D, 3D or 4D image, got shape {data.shape}")
    return np.moveaxis(data, slice_axis, 0)


def _dicom_pixels(ds, path: Path) -> np.ndarray:
    modality = str(ds.get("Modality", ""))
    if modality != "MR":
        raise ValueError(f"{path}: not an MR image (DICOM Modality {modality or 'missing'!r})")
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")) not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"{path}: not a grey-scale image ({ds.PhotometricInterpretation})")
    try:
        px = np.asarray(ds.pixel_array, dtype=np.float64)
    except Exception as err:  # compressed syntaxes need extra pydicom handlers
        raise ValueError(f"{path}: cannot decode the pixel data ({err}); use an uncompressed encoding") from None
    px = px * float(ds.get("RescaleSlope", 1.0) or 1.0) + float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return px if px.ndim == 3 else px[None]


def _read_dicom(paths: list[Path]) -> np.ndarray:
    pydicom = _need("pydicom")
    slices = []
    for p in paths:
        try:
            ds = pydicom.dcmread(str(p))
        except Exception as err:
            raise ValueError(f"{p}: not a readable DICOM file ({err})") from None
        slices.append((int(ds.get("InstanceNumber", 0) or 0), p.name, _dicom_pixels(ds, p)))
    slices.sort(key=lambda s: s[:2])
    shapes = {s[2].shape[1:] for s in slices}
    if len(shapes) > 1:
        raise ValueError(f"{paths[0].parent}: DICOM images of different sizes {sorted(shapes)}: one series per folder")
    return np.concatenate([s[2] for s in slices])


def _read_png_stack(paths: list[Path]) -> np.ndarray:
    from skimage import io

    out = []
    for p in paths:
        img = np.asarray(io.imread(str(p)), dtype=np.float64)
        if img.ndim == 3 and img.shape[-1] in (3, 4):
            rgb = img[..., :3]
            if not np.allclose(rgb, rgb[..., :1]):
                raise ValueError(f"{p}: a colour image; MR magnitude images are grey-scale")
            img = rgb[..., 0]
        if img.ndim != 2:
            raise ValueError(f"{p}: expected a grey-scale image, got shape {img.shape}")
        out.append(img)
    if len({a.shape for a in out}) > 1:
        raise ValueError(f"{paths[0].parent}: PNG slices of different sizes {sorted({a.shape for a in out})}")
    return np.stack(out)


def read_volume(path: str | Path, slice_axis: int = -1, frame_axis: int | None = None,
                frame: int = 0) -> np.ndarray:
    """Step 1: one magnitude volume ``[S, H, W]`` (float64, >= 0) from a file or a folder.

    Args:
        path: .nii / .nii.gz, a DICOM file, .npy, .png, or a folder of DICOM files or of .png files.
        slice_axis: NIfTI only: the axis that indexes slices (default the last, axial for most scans).
        frame_axis, frame: NIfTI only, required for 4D data: take index ``frame`` of axis ``frame_axis``.

    Raises:
        ValueError: unknown format, no slices, non-MR DICOM, 4D without a frame, non-finite values.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        dicoms = [p for p in files if _is_dicom(p)]
        pngs = [p for p in files if _suffix(p) == ".png"]
        if dicoms and pngs:
            raise ValueError(f"{path}: holds both DICOM and PNG files; one stack per folder")
        if not dicoms and not pngs:
            raise ValueError(f"{path}: an empty stack (no DICOM or .png files)")
        vol = _read_dicom(dicoms) if dicoms else _read_png_stack(pngs)
    elif _suffix(path) in _NIFTI:
        vol = _read_nifti(path, slice_axis, frame_axis, frame)
    elif _suffix(path) == ".npy":
        vol = np.load(path, allow_pickle=False).astype(np.float64)
        if vol.ndim == 2:
            vol = vol[None]
        if vol.ndim != 3:
            raise ValueError(f"{path}: .npy must hold [H, W] or [S, H, W], got shape {vol.shape}")
    elif _suffix(path) == ".png":
        vol = _read_png_stack([path])
    elif _is_dicom(path):
        vol = _read_dicom([path])
    else:
        raise ValueError(f"{path}: unknown image format (expected .nii, .nii.gz, DICOM, .npy, .png or a folder)")
    if vol.size == 0 or min(vol.shape) == 0:
        raise ValueError(f"{path}: an empty stack (shape {vol.shape})")
    if not np.isfinite(vol).all():
        raise ValueError(f"{path}: holds NaN or inf values")
    if (vol < 0).any():
        warnings.warn(f"{path}: negative values (min {vol.min():.3g}) clipped to 0 (magnitude images)", stacklevel=2)
        vol = np.clip(vol, 0.0, None)
    return vol


def fit_square(vol: np.ndarray, size: int, fit: Fit = "resample") -> np.ndarray:
    """Step 2: ``[S, H, W] -> [S, size, size]``: centre zero-pad to a square, then resample (or only pad).

    ``fit="pad"`` needs H, W <= size. Resampling is ``skimage.transform.resize`` (linear, anti-aliased when
    shrinking), clipped at 0.
    """
    from skimage.transform import resize

    s, h, w = vol.shape
    n = max(h, w)
    if fit == "pad":
        if n > size:
            raise ValueError(f"fit='pad' needs images no larger than {size}, got {h} x {w}; use fit='resample'")
        n = size
    elif fit != "resample":
        raise ValueError(f"fit must be 'resample' or 'pad', got {fit!r}")
    sq = np.zeros((s, n, n), dtype=np.float64)
    sq[:, (n - h) // 2:(n - h) // 2 + h, (n - w) // 2:(n - w) // 2 + w] = vol
    if n == size:
        return sq
    out = resize(sq, (s, size, size), order=1, anti_aliasing=n > size, preserve_range=True)
    return np.clip(out, 0.0, None)


def smooth_phase(slices: int, size: int, rng: np.random.Generator, std: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Step 3: a smooth phase per slice, ``[S, size, size]``, and its coefficients ``[S, 4]`` (PHASE_MODEL).

    Coefficients vary linearly over the volume's slices (base + slope * t, t in [-1, 1]), as in the
    synthetic phantoms (``mri/synthetic.py``), so neighbouring slices have similar phase.
    """
    base, slope = rng.normal(0.0, std, size=(2, 4))
    t = np.linspace(-1.0, 1.0, slices) if slices > 1 else np.zeros(1)
    coef = base[None] + slope[None] * t[:, None]  # [S, 4]
    lin = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(lin, lin, indexing="ij")
    basis = np.stack([np.ones_like(xx), xx, yy, xx**2 + yy**2])  # [4, size, size]
    return np.einsum("sc,chw->shw", coef, basis), coef


def split_volumes(slice_counts: list[int], fractions: tuple[float, float, float],
                  seed: int = 0) -> list[str]:
    """Step 5: assign whole volumes to train / val / test, close to ``fractions`` of the slices.

    Volumes are taken in a seeded random order; each goes to the split furthest below its target share
    of slices (ties: train, val, test). Every split with a positive fraction gets at least one volume when
    there are enough volumes. Returns one split name per volume.
    """
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (3,) or (frac < 0).any() or frac.sum() <= 0:
        raise ValueError(f"split needs three non-negative fractions (train, val, test), got {fractions}")
    frac = frac / frac.sum()
    wanted = [i for i in range(3) if frac[i] > 0]
    if len(slice_counts) < len(wanted):
        raise ValueError(f"cannot split {len(slice_counts)} volume(s) into {len(wanted)} non-empty parts")
    order = np.random.default_rng(seed).permutation(len(slice_counts))
    total = float(sum(slice_counts))
    got, out = np.zeros(3), [""] * len(slice_counts)
    for rank, v in enumerate(order):
        empty = [i for i in wanted if got[i] == 0]
        if empty and len(order) - rank <= len(empty):  # the last volumes fill splits still empty
            i = empty[0]
        else:
            i = max(wanted, key=lambda j: (frac[j] * total - got[j], -j))
        got[i] += slice_counts[v]
        out[v] = SPLITS[i]
    return out


@dataclass
class ImportConfig:
    """``gendiff mri import`` (configs/mri_import.yaml)."""

    inputs: list[str] = field(default_factory=list)  # files or folders, one volume each
    out: str = ""  # folder for the fastMRI-format .h5 files
    size: int = 128  # side of the square output slices in pixels (>= 16)
    fit: Fit = "resample"  # resample: pad to a square, resize; pad: zero-pad only
    phase: Literal["smooth", "none"] = "smooth"  # smooth: a smooth synthetic phase per slice
    phase_std: float = 0.35  # std of the smooth phase's coefficients
    seed: int = 0  # random seed
    slice_axis: int = -1  # NIfTI only: the axis that indexes slices (-1: the last)
    frame_axis: int | None = None  # NIfTI only, needed for 4D data: the axis that indexes frames
    frame: int = 0  # NIfTI only: the frame taken from frame_axis
    split: list[float] = field(default_factory=list)  # e.g. 0.6,0.2,0.2 (train, val, test); empty: no split
    overwrite: bool = False  # replace existing output files


def _volume_name(src: Path, used: set[str]) -> str:
    stem = src.name[: -len(".nii.gz")] if src.name.lower().endswith(".nii.gz") else src.stem
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem) or "volume"
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}_{k}"
    used.add(name)
    return name


def import_images(cfg: ImportConfig) -> list[Path]:
    """Steps 1-5 for every input; returns the written files. Nothing is written if any input is bad."""
    if not cfg.inputs or not cfg.out:
        raise ValueError("import needs --inputs FILE_OR_FOLDER[,...] and --out DIR")
    if cfg.size < 16:
        raise ValueError(f"size must be >= 16, got {cfg.size}")
    sources = [Path(p) for p in cfg.inputs]
    vols = [fit_square(read_volume(p, cfg.slice_axis, cfg.frame_axis, cfg.frame), cfg.size, cfg.fit)
            for p in sources]  # Steps 1-2, all inputs checked before anything is written
    used: set[str] = set()
    names = [_volume_name(p, used) for p in sources]
    splits = (split_volumes([v.shape[0] for v in vols], tuple(cfg.split), cfg.seed) if cfg.split
              else [""] * len(vols))
    out = Path(cfg.out)
    paths = [out / sp / f"{n}.h5" for sp, n in zip(splits, names)]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not cfg.overwrite:
        raise FileExistsError(f"{existing} exist; pass --overwrite to replace them")
    for v, (src, vol, path) in enumerate(zip(sources, vols, paths)):
        rng = np.random.default_rng([cfg.seed, v])
        attrs = {"source": src.name, "fit": cfg.fit, "phase_model": "none"}
        image = vol.astype(np.complex128)
        if cfg.phase == "smooth":  # Step 3
            phi, coef = smooth_phase(vol.shape[0], cfg.size, rng, cfg.phase_std)
            image = vol * np.exp(1j * phi)
            attrs.update(phase_model=PHASE_MODEL, phase_seed=json.dumps([cfg.seed, v]), phase_coefficients=coef)
        pid = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:16]
        with atomic_path(path) as tmp:  # Step 4; an interrupted write leaves the old file (or none), never half a file
            write_fastmri_volume(tmp, image.astype(np.complex64), pid, acquisition="IMPORTED", extra_attrs=attrs)
    if cfg.split:
        listing = {sp: [{"file": str(p.relative_to(out)), "source": str(s), "slices": int(v.shape[0])}
                        for s, v, p, x in zip(sources, vols, paths, splits) if x == sp] for sp in SPLITS}
        (out / "split.json").write_text(json.dumps(listing, indent=2))
        print(", ".join(f"{sp}: {len(listing[sp])} volume(s), {sum(e['slices'] for e in listing[sp])} slices"
                        for sp in SPLITS))
    print(f"wrote {len(paths)} fastMRI-format single-coil file(s) under {out}")
    return paths
