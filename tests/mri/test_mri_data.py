"""Tests for gendiff.mri.synthetic and gendiff.mri.data on small synthetic fastMRI files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from fastmri.data import SliceDataset

from gendiff.mri.data import MRISliceDataset, load_images, magnitude
from gendiff.mri.synthetic import ismrmrd_header, make_phantom, make_volume, write_synthetic_dataset
from gendiff.operators import KSpaceLineOperator


def _fft2c(x: np.ndarray) -> np.ndarray:
    """Independent numpy reference of the centred orthonormal FFT over the last two axes."""
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), norm="ortho"), axes=ax)


def _ifft2c(k: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), norm="ortho"), axes=ax)


def _crop(x: np.ndarray, c: int) -> np.ndarray:
    h, w = x.shape[-2:]
    return x[..., (h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]


def _as_complex(t: torch.Tensor) -> np.ndarray:
    return (t[0] + 1j * t[1]).numpy()


def _write(path: Path, kspace: np.ndarray, recon: tuple[str, np.ndarray] | None = None,
           mask: np.ndarray | None = None, header: bool = True) -> Path:
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=kspace.astype(np.complex64))
        if header:
            hf.create_dataset("ismrmrd_header", data=ismrmrd_header(kspace.shape[-2:], kspace.shape[-2:]))
        if recon is not None:
            hf.create_dataset(recon[0], data=recon[1].astype(np.float32))
        if mask is not None:
            hf.create_dataset("mask", data=mask)
        hf.attrs["acquisition"] = "CORPD_FBK"
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("synth")
    return root, write_synthetic_dataset(root, volumes=2, slices=3, size=32, seed=7)


def test_phantom_properties():
    a = make_phantom(48, np.random.default_rng(0))
    assert a.dtype == np.complex64 and a.shape == (48, 48)
    assert np.isclose(np.abs(a).max(), 1.0) and np.abs(a).min() == 0.0  # background outside the body
    assert np.array_equal(a, make_phantom(48, np.random.default_rng(0)))
    assert not np.allclose(np.abs(a), np.abs(make_phantom(48, np.random.default_rng(1))))
    inside = np.abs(a) > 0.2
    assert np.angle(a[inside]).std() > 0.01  # a non-trivial smooth phase
    vol = np.abs(make_volume(32, 6, np.random.default_rng(3)))
    steps = [np.abs(vol[i + 1] - vol[i]).mean() for i in range(5)]
    assert max(steps) < np.abs(vol[-1] - vol[0]).mean()  # neighbouring slices are closer than far ones


def test_synthetic_files_round_trip_through_fastmri(synth):
    root, paths = synth
    assert [p.name for p in paths] == ["synthetic_0000.h5", "synthetic_0001.h5"]
    raw = SliceDataset(root, "singlecoil")
    assert len(raw) == 6
    kspace, mask, target, attrs, fname, sl = raw[4]
    assert kspace.shape == (32, 32) and kspace.dtype == np.complex64 and mask is None
    assert fname == "synthetic_0001.h5" and sl == 1
    assert attrs["acquisition"] == "CORPD_FBK" and attrs["encoding_size"] == (32, 32, 1)
    assert attrs["padding_left"] == 0 and attrs["padding_right"] == 32 and len(attrs["patient_id"]) > 0
    np.testing.assert_allclose(target, np.abs(_ifft2c(kspace)), rtol=0, atol=1e-5 * target.max())
    with h5py.File(paths[1]) as hf:
        recon = hf["reconstruction_esc"][()]
        assert np.isclose(hf.attrs["max"], recon.max()) and np.isclose(hf.attrs["norm"], np.linalg.norm(recon))


def test_dataset_items_match_written_images(synth):
    root, paths = synth
    ds = MRISliceDataset(root, crop=32)
    assert len(ds) == 6
    it = ds[4]
    with h5py.File(paths[1]) as hf:
        k, recon = hf["kspace"][1], hf["reconstruction_esc"][1]
    img = _as_complex(it["image"])
    assert it["image"].shape == (2, 32, 32) and it["image"].dtype == torch.float32
    np.testing.assert_allclose(img * it["scale"], _ifft2c(k), atol=1e-5 * recon.max())
    np.testing.assert_allclose(it["target"].numpy() * it["scale"], recon, atol=1e-5 * recon.max())
    assert abs(float(it["target"].max()) - 1.0) < 1e-6 and np.isclose(it["scale"], recon.max(), rtol=1e-5)
    np.testing.assert_allclose(_as_complex(it["kspace"]), _fft2c(img), atol=1e-5)
    op = KSpaceLineOperator((2, 32, 32))
    torch.testing.assert_close(op.kspace(it["image"]), it["kspace"], atol=1e-5, rtol=1e-5)
    assert it["mask"].all() and not it["has_mask"] and it["has_target"]
    assert it["fname"] == "synthetic_0001.h5" and it["slice_num"] == 1


@pytest.mark.parametrize("mode", ["image", "kspace"])
def test_crop_modes(synth, mode):
    root, paths = synth
    it = MRISliceDataset(root, crop=16, crop_mode=mode)[0]
    with h5py.File(paths[0]) as hf:
        k = hf["kspace"][0]
    ref = _crop(_ifft2c(k), 16) if mode == "image" else _ifft2c(_crop(k, 16))
    np.testing.assert_allclose(_as_complex(it["image"]) * it["scale"], ref, atol=1e-5 * np.abs(ref).max())
    assert abs(float(it["target"].max()) - 1.0) < 1e-6
    batch = next(iter(torch.utils.data.DataLoader(MRISliceDataset(root, crop=16, crop_mode=mode), batch_size=4)))
    assert batch["image"].shape == (4, 2, 16, 16) and batch["mask"].shape == (4, 16)


def test_multicoil_file_gives_rss_images(tmp_path):
    rng = np.random.default_rng(0)
    img = make_volume(24, 2, rng)  # [2, H, W]
    yy, xx = np.mgrid[-1:1:24j, -1:1:24j]
    sens = np.stack([np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2)) * np.exp(1j * (cx * xx + cy * yy))
                     for cx, cy in [(-1, -1), (1, -1), (0, 1), (1, 1)]])  # [4 coils, H, W]
    coils = img[:, None] * sens[None]  # [slices, coils, H, W]
    rss = np.sqrt((np.abs(coils) ** 2).sum(1))
    _write(tmp_path / "mc.h5", _fft2c(coils), recon=("reconstruction_rss", rss))
    ds = MRISliceDataset(tmp_path, challenge="multicoil", crop=24)
    assert len(ds) == 2
    it = ds[1]
    assert torch.all(it["image"][1] == 0) and it["has_target"]
    np.testing.assert_allclose(it["image"][0].numpy() * it["scale"], rss[1], atol=1e-5 * rss.max())
    assert np.isclose(it["scale"], rss[1].max(), rtol=1e-5)
    with pytest.raises(ValueError, match=r"singlecoil kspace must be complex \[slices, H, W\]"):
        MRISliceDataset(tmp_path, challenge="singlecoil", crop=24)


def test_file_without_reconstruction_and_test_file_with_mask(tmp_path):
    vol = make_volume(32, 2, np.random.default_rng(1))
    k = _fft2c(vol)
    _write(tmp_path / "a_norecon.h5", k)
    mask = np.zeros(32, dtype=bool)
    mask[[1, 5, 14, 15, 16, 17, 22, 30]] = True
    _write(tmp_path / "b_test.h5", k * mask, mask=mask)
    ds = MRISliceDataset(tmp_path, crop=32)
    assert len(ds) == 4
    a, b = ds[0], ds[2]
    assert not a["has_target"] and not a["has_mask"] and a["mask"].all()
    assert not b["has_target"] and b["has_mask"]
    assert torch.equal(b["mask"], torch.from_numpy(mask))  # image mode, width == crop: exact
    # k-space crop: the mask is centre-cropped and unmeasured columns of the cropped k-space are zero
    bk = MRISliceDataset(tmp_path, crop=16, crop_mode="kspace")[2]
    assert torch.equal(bk["mask"], torch.from_numpy(mask[8:24]))
    assert torch.all(bk["kspace"][..., ~bk["mask"]].abs() < 1e-6)
    assert bk["kspace"][..., bk["mask"]].abs().max() > 1e-2
    # image crop to 16 of a 32-wide k-space: nearest frequency, index 16 + 2 * (j - 8)
    bi = MRISliceDataset(tmp_path, crop=16)[2]
    assert torch.equal(bi["mask"], torch.from_numpy(mask[np.arange(0, 32, 2)]))


def test_foreign_files_raise_clear_errors(tmp_path):
    k = _fft2c(make_volume(16, 1, np.random.default_rng(2)))
    cases = {
        "nokspace.h5": (lambda p: h5py.File(p, "w").close(), r"nokspace\.h5.*missing.*'kspace'"),
        "noheader.h5": (lambda p: _write(p, k, header=False), r"noheader\.h5.*missing.*'ismrmrd_header'"),
        "notes.h5": (lambda p: p.write_text("not hdf5"), r"notes\.h5 is not a readable HDF5 file"),
    }
    for name, (make, msg) in cases.items():
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        make(folder / name)
        with pytest.raises(ValueError, match=msg):
            MRISliceDataset(folder, crop=16)
    folder = tmp_path / "nons"
    folder.mkdir()
    with h5py.File(folder / "nons.h5", "w") as hf:
        hf.create_dataset("kspace", data=k.astype(np.complex64))
        hf.create_dataset("ismrmrd_header", data=ismrmrd_header((16, 16), (16, 16)).replace(
            b' xmlns="http://www.ismrm.org/ISMRMRD"', b""))
    with pytest.raises(ValueError, match=r"nons\.h5: ismrmrd_header lacks.*namespace"):
        MRISliceDataset(folder, crop=16)
    with pytest.raises(ValueError, match="smaller than crop=32"):
        _too_small(tmp_path, k)
    with pytest.raises(ValueError, match="no .h5 files"):
        (tmp_path / "empty").mkdir()
        MRISliceDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        MRISliceDataset(tmp_path / "missing")


def _too_small(tmp_path: Path, k: np.ndarray) -> None:
    folder = tmp_path / "small"
    folder.mkdir()
    _write(folder / "s.h5", k)
    MRISliceDataset(folder, crop=32)


def test_non_h5_entries_are_skipped_with_warning(synth, tmp_path):
    write_synthetic_dataset(tmp_path, volumes=1, slices=2, size=16)
    (tmp_path / "README.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    with pytest.warns(UserWarning, match=r"README\.txt.*sub"):
        ds = MRISliceDataset(tmp_path, crop=16)
    assert len(ds) == 2 and [p.name for p in ds.files] == ["synthetic_0000.h5"]


def test_no_overwrite_without_flag(tmp_path):
    paths = write_synthetic_dataset(tmp_path, volumes=1, slices=1, size=16, seed=0)
    before = paths[0].read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_synthetic_dataset(tmp_path, volumes=2, slices=1, size=16, seed=1)
    assert paths[0].read_bytes() == before and not (tmp_path / "synthetic_0001.h5").exists()
    write_synthetic_dataset(tmp_path, volumes=1, slices=1, size=16, seed=1, overwrite=True)
    with h5py.File(paths[0]) as hf0:
        assert hf0["kspace"].shape == (1, 16, 16)
    assert paths[0].read_bytes() != before
    with pytest.raises(ValueError, match="singlecoil"):
        write_synthetic_dataset(tmp_path / "x", volumes=1, slices=1, challenge="multicoil")


def test_load_images_and_magnitude(synth):
    root, _ = synth
    images, meta = load_images(root, crop=16, max_slices=4)
    assert images.shape == (4, 2, 16, 16) and len(meta) == 4
    assert meta[3]["fname"] == "synthetic_0001.h5" and meta[3]["slice_num"] == 0
    mag = magnitude(images)
    assert mag.shape == (4, 16, 16) and torch.allclose(mag.amax(dim=(-2, -1)), torch.ones(4))
    torch.testing.assert_close(mag, images.pow(2).sum(1).sqrt())
    x = torch.zeros(1, 2, 3, 3, requires_grad=True)
    magnitude(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match=r"\[\.\.\., 2, H, W\]"):
        magnitude(torch.zeros(3, 4, 4))
