"""fastMRI slices as normalised complex images for diffusion priors and active subsampling.

``MRISliceDataset`` is ``fastmri.data.SliceDataset`` plus a transform (``SliceTransform``) that turns
each slice into a dict:

- ``image`` float32 ``[2, crop, crop]``: complex image (real, imag), scaled by ``1 / scale`` so that
  magnitudes lie in [0, 1]. Single-coil: ``ifft2c`` of k-space. Multi-coil: the coil-combined RSS
  magnitude (``fastmri.rss`` of the coil magnitudes) with zero phase.
- ``kspace`` float32 ``[2, crop, crop]``: ``fft2c(image)`` (same channel layout), so it is exactly the
  k-space that ``gendiff.operators.KSpaceLineOperator`` sees.
- ``target`` float32 ``[crop, crop]``: ``|image|``, what reconstructions are scored against.
- ``scale`` (the slice's max magnitude before normalisation), ``fname``, ``slice_num``.
- ``mask`` bool ``[crop]``: the file's column (phase-encoding) mask mapped to the cropped width, all
  True when the file has none; ``has_mask``; ``has_target`` (whether the file holds a reconstruction).

Cropping (``crop_mode``):
- ``"image"`` (default, the common choice): inverse-FFT the full k-space, centre-crop the *image*
  with ``fastmri.data.transforms.complex_center_crop`` (as fastMRI's own transforms do), re-FFT.
  The image keeps full resolution and shows the anatomy at the crop's field of view. A file mask is
  mapped to the coarser column grid of the cropped k-space by nearest frequency (exact when the
  k-space width equals ``crop``; approximate otherwise, since image cropping resamples k-space).
- ``"kspace"`` (the ADS reference): centre-crop *k-space* to ``crop x crop`` and inverse-FFT; a
  lower-resolution image of the whole field of view. A file mask is centre-cropped exactly.

fastMRI test files carry ``mask`` and no reconstruction; they load (``has_mask`` True, ``has_target``
False, ``target`` is then the magnitude of the zero-filled image). Every .h5 file is checked up front
with h5py: a file without ``kspace`` or ``ismrmrd_header`` (or with the wrong k-space rank for the
challenge, or smaller than ``crop``) raises ``ValueError`` naming the file and what is missing.
Entries of the folder that are not ``*.h5`` files (README, .DS_Store, sub-folders, caches) are
skipped with one ``UserWarning`` listing them, because SliceDataset would otherwise open them as HDF5.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as etree
from pathlib import Path
from typing import Any, Literal

import fastmri
import h5py
import numpy as np
import torch
from fastmri.data import SliceDataset
from fastmri.data.mri_data import et_query
from fastmri.data.transforms import complex_center_crop, to_tensor
from torch import Tensor

__all__ = ["MRISliceDataset", "SliceTransform", "check_fastmri_file", "load_images", "magnitude"]

Challenge = Literal["singlecoil", "multicoil"]
CropMode = Literal["image", "kspace"]
_HEADER_FIELDS = [  # what SliceDataset._retrieve_metadata reads (as integers)
    *[["encoding", space, "matrixSize", ax] for space in ("encodedSpace", "reconSpace") for ax in "xyz"],
    ["encoding", "encodingLimits", "kspace_encoding_step_1", "center"],
    ["encoding", "encodingLimits", "kspace_encoding_step_1", "maximum"],
]


def magnitude(x: Tensor) -> Tensor:
    """Magnitude of complex images stored as channels: ``[..., 2, H, W] -> [..., H, W]``.

    Uses ``torch.linalg.vector_norm``, whose gradient at 0 is 0 (no NaN in guidance).
    """
    if x.dim() < 3 or x.shape[-3] != 2:
        raise ValueError(f"expected complex images [..., 2, H, W], got {tuple(x.shape)}")
    return torch.linalg.vector_norm(x, dim=-3)


def check_fastmri_file(path: str | Path, challenge: Challenge, crop: int | None = None) -> None:
    """Check that ``path`` is a fastMRI file of ``challenge``; raise ``ValueError`` saying what is wrong.

    Args:
        path: an .h5 file.
        challenge: "singlecoil" (k-space ``[slices, H, W]``) or "multicoil" (``[slices, coils, H, W]``).
        crop: if given, k-space must be at least ``crop x crop``.
    """
    path = Path(path)
    try:
        hf = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 file ({err})") from None
    with hf:
        missing = [k for k in ("kspace", "ismrmrd_header") if k not in hf]
        if missing:
            raise ValueError(f"{path} is not a fastMRI file: missing dataset(s) {missing} "
                             f"(found {sorted(hf.keys())})")
        shape = hf["kspace"].shape
        rank = 3 if challenge == "singlecoil" else 4
        if len(shape) != rank or not np.issubdtype(hf["kspace"].dtype, np.complexfloating):
            layout = "[slices, H, W]" if rank == 3 else "[slices, coils, H, W]"
            raise ValueError(f"{path}: {challenge} kspace must be complex {layout}, got "
                             f"{hf['kspace'].dtype} {shape}")
        if crop is not None and min(shape[-2:]) < crop:
            raise ValueError(f"{path}: k-space {shape[-2:]} is smaller than crop={crop}")
        if "mask" in hf and tuple(hf["mask"].shape) != (shape[-1],):
            raise ValueError(f"{path}: mask must be a column mask of shape ({shape[-1]},), "
                             f"got {hf['mask'].shape}")
        try:
            root = etree.fromstring(hf["ismrmrd_header"][()])
            for q in _HEADER_FIELDS:
                int(et_query(root, q))
        except (etree.ParseError, RuntimeError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: ismrmrd_header lacks fastMRI fields or the ISMRMRD namespace "
                             f"({err}); need {['/'.join(q) for q in _HEADER_FIELDS]}") from None


def _map_mask(mask: np.ndarray | None, width: int, crop: int, mode: CropMode) -> tuple[Tensor, bool]:
    """A file's column mask ``[W]`` on the cropped k-space grid: ``(bool [crop], has_mask)``."""
    if mask is None:
        return torch.ones(crop, dtype=torch.bool), False
    m = torch.as_tensor(np.asarray(mask) != 0).reshape(-1)
    if mode == "kspace":
        start = (width - crop) // 2  # the same offset complex_center_crop uses
        return m[start:start + crop].clone(), True
    j = torch.arange(crop, dtype=torch.float64)  # centred index j <-> frequency (j - crop//2) / crop
    i = torch.round(width // 2 + (j - crop // 2) * width / crop).long().clamp(0, width - 1)
    return m[i], True


class SliceTransform:
    """SliceDataset transform: raw slice -> normalised complex image dict (see module docstring).

    Args:
        crop: output size (square).
        challenge: "singlecoil" or "multicoil".
        crop_mode: "image" (crop the image, re-FFT) or "kspace" (crop k-space, as the ADS reference).
    """

    def __init__(self, crop: int, challenge: Challenge, crop_mode: CropMode = "image") -> None:
        self.crop, self.challenge, self.crop_mode = int(crop), challenge, crop_mode

    def _complex_image(self, kspace: Tensor) -> Tensor:
        """``[(coils,) H, W, 2]`` k-space -> cropped image ``[crop, crop, 2]`` (RSS with zero phase)."""
        size = (self.crop, self.crop)
        if self.crop_mode == "kspace":
            img = fastmri.ifft2c(complex_center_crop(kspace, size))
        else:
            img = complex_center_crop(fastmri.ifft2c(kspace), size)
        if self.challenge == "multicoil":
            rss = fastmri.rss(fastmri.complex_abs(img), dim=0)
            img = torch.stack([rss, torch.zeros_like(rss)], dim=-1)
        return img

    def __call__(self, kspace: np.ndarray, mask: np.ndarray | None, target: np.ndarray | None,
                 attrs: dict, fname: str, slice_num: int) -> dict[str, Any]:
        img = self._complex_image(to_tensor(kspace).float())  # [crop, crop, 2]
        scale = float(fastmri.complex_abs(img).max())
        if not np.isfinite(scale):
            raise ValueError(f"{fname} slice {slice_num}: k-space holds NaN or inf")
        scale = scale if scale > 0 else 1.0  # an all-zero slice stays zero
        img = img / scale
        k = fastmri.fft2c(img)
        col_mask, has_mask = _map_mask(mask, kspace.shape[-1], self.crop, self.crop_mode)
        image = img.permute(2, 0, 1).contiguous()
        return {
            "image": image, "kspace": k.permute(2, 0, 1).contiguous(), "target": magnitude(image),
            "scale": scale, "mask": col_mask, "has_mask": has_mask, "has_target": target is not None,
            "fname": fname, "slice_num": int(slice_num),
        }


class _H5OnlySliceDataset(SliceDataset):
    """SliceDataset that gives zero slices to folder entries that are not .h5 files (it opens all)."""

    def _retrieve_metadata(self, fname):
        if not _is_h5(Path(fname)):
            return {}, 0
        return super()._retrieve_metadata(fname)


def _is_h5(p: Path) -> bool:
    return p.is_file() and p.suffix == ".h5" and not p.name.startswith(".")


class MRISliceDataset(torch.utils.data.Dataset):
    """fastMRI slices of every .h5 file in ``root``, as normalised complex images.

    Args:
        root: folder of fastMRI .h5 files (real or from ``write_synthetic_dataset``).
        challenge: "singlecoil" or "multicoil".
        crop: output image size (square), e.g. 128 (the ADS knee setup) or 64 for CPU studies.
        crop_mode: "image" or "kspace" (module docstring).
        sample_rate, volume_sample_rate: fraction of slices / volumes kept (SliceDataset's options).

    Each item is the dict described in the module docstring; a ``DataLoader`` batches it.
    """

    def __init__(self, root: str | Path, challenge: Challenge = "singlecoil", crop: int = 128,
                 crop_mode: CropMode = "image", sample_rate: float | None = None,
                 volume_sample_rate: float | None = None) -> None:
        if challenge not in ("singlecoil", "multicoil"):
            raise ValueError(f"challenge must be 'singlecoil' or 'multicoil', got {challenge!r}")
        if crop_mode not in ("image", "kspace"):
            raise ValueError(f"crop_mode must be 'image' or 'kspace', got {crop_mode!r}")
        if int(crop) < 1:
            raise ValueError(f"crop must be positive, got {crop}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"fastMRI folder {root} does not exist or is not a folder")
        entries = sorted(root.iterdir())
        self.files = [p for p in entries if _is_h5(p)]
        skipped = [p.name for p in entries if not _is_h5(p)]
        if skipped:
            warnings.warn(f"{root}: skipping entries that are not .h5 files: {skipped}", stacklevel=2)
        if not self.files:
            raise ValueError(f"{root} holds no .h5 files")
        for f in self.files:
            check_fastmri_file(f, challenge, crop=int(crop))
        self.challenge, self.crop, self.crop_mode = challenge, int(crop), crop_mode
        self.transform = SliceTransform(self.crop, challenge, crop_mode)
        self._slices = _H5OnlySliceDataset(root, challenge, transform=self.transform,
                                           sample_rate=sample_rate, volume_sample_rate=volume_sample_rate)

    def __len__(self) -> int:
        return len(self._slices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            return self._slices[i]
        except ValueError as err:  # the transform knows only the file's base name: give the whole path
            fname = self._slices.raw_samples[i].fname
            raise ValueError(f"{fname}: {str(err).removeprefix(fname.name).lstrip(': ')}") from None


def load_images(root: str | Path, crop: int = 128, challenge: Challenge = "singlecoil",
                max_slices: int | None = None, crop_mode: CropMode = "image",
                ) -> tuple[Tensor, list[dict[str, Any]]]:
    """All (or the first ``max_slices``) slices of ``root`` stacked, for training and benchmarks.

    Returns:
        ``images [S, 2, crop, crop]`` (magnitudes in [0, 1]) and one metadata dict per slice with
        ``fname``, ``slice_num``, ``scale``, ``has_target``, ``has_mask``, ``mask`` (bool ``[crop]``).
    """
    ds = MRISliceDataset(root, challenge=challenge, crop=crop, crop_mode=crop_mode)
    n = len(ds) if max_slices is None else min(int(max_slices), len(ds))
    if n < 1:
        raise ValueError(f"no slices to load from {root} (max_slices={max_slices})")
    items = [ds[i] for i in range(n)]
    keys = ("fname", "slice_num", "scale", "has_target", "has_mask", "mask")
    return torch.stack([it["image"] for it in items]), [{k: it[k] for k in keys} for it in items]
