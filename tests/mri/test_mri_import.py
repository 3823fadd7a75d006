"""``gendiff mri import`` (real NIfTI / DICOM / .npy / .png files) and the split of volumes into train / val / test."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from fastmri.data import SliceDataset

from gendiff.cli import main
from gendiff.config import from_dict, load_yaml
from gendiff.mri.data import MRISliceDataset, load_images
from gendiff.mri.importing import ImportConfig, import_images, read_volume, split_volumes

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")
ROOT = Path(__file__).resolve().parents[2]


def _volume(s: int = 3, n: int = 32, seed: int = 0) -> np.ndarray:
    """A positive magnitude volume [S, n, n] with structure (a blob and noise)."""
    rng = np.random.default_rng(seed)
    lin = np.linspace(-1, 1, n)
    yy, xx = np.meshgrid(lin, lin, indexing="ij")
    blob = np.exp(-(xx**2 + yy**2) * 3)
    return np.stack([(1 + k) * 100 * blob + rng.uniform(0, 20, (n, n)) for k in range(s)])


def _dicom(path: Path, pixels: np.ndarray, modality: str = "MR", instance: int = 1) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.InstanceNumber, ds.PatientID = modality, instance, "secret-id"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _magnitudes_via_slice_dataset(folder: Path) -> np.ndarray:
    """Image magnitudes [S, H, W] read back by fastmri's own SliceDataset (k-space -> ifft2c)."""
    import fastmri
    from fastmri.data.transforms import to_tensor

    ds = SliceDataset(folder, "singlecoil", transform=lambda k, *a: fastmri.complex_abs(fastmri.ifft2c(to_tensor(k))))
    return np.stack([ds[i].numpy() for i in range(len(ds))])


@pytest.mark.parametrize("fmt", ["npy", "nifti", "png", "dicom"])
def test_import_round_trip(tmp_path, fmt):
    """image -> file -> SliceDataset -> image, to 1e-5 (relative), with the smooth random phase."""
    vol = np.round(_volume())  # integers: PNG and DICOM store them exactly
    if fmt == "npy":
        src = tmp_path / "vol.npy"
        np.save(src, vol)
    elif fmt == "nifti":
        src = tmp_path / "vol.nii.gz"
        nib.save(nib.Nifti1Image(np.moveaxis(vol, 0, -1).astype(np.float32), np.eye(4)), src)
    elif fmt == "png":
        from skimage import io

        src = tmp_path / "pngs"
        src.mkdir()
        for k, sl in enumerate(vol):
            io.imsave(src / f"s{k:02d}.png", sl.astype(np.uint16), check_contrast=False)
    else:
        src = tmp_path / "dicoms"
        src.mkdir()
        for k, sl in enumerate(vol):  # file names in reverse order: InstanceNumber decides the slice order
            _dicom(src / f"z{9 - k}.dcm", sl, instance=k + 1)
    out = tmp_path / "out"
    assert main(["mri", "import", "--inputs", str(src), "--out", str(out), "--size", "32", "--seed", "3"]) == 0
    files = sorted(out.glob("*.h5"))
    assert len(files) == 1
    back = _magnitudes_via_slice_dataset(out)
    np.testing.assert_allclose(back / vol.max(), vol / vol.max(), atol=1e-5)
    with h5py.File(files[0], "r") as hf:  # the fastMRI layout, the phase recorded, no DICOM PatientID
        assert hf["kspace"].dtype == np.complex64 and hf["reconstruction_esc"].shape == (3, 32, 32)
        assert json.loads(hf.attrs["phase_seed"]) == [3, 0] and hf.attrs["phase_coefficients"].shape == (3, 4)
        assert "secret-id" not in str(dict(hf.attrs))
        phase = np.angle(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(hf["kspace"][0]), norm="ortho")))
    assert np.ptp(phase) > 0.1  # a real phase, not a real-valued image
    images, _ = load_images(out, crop=32, crop_mode="kspace")  # and gendiff's loader agrees
    np.testing.assert_allclose(images.pow(2).sum(1).sqrt().numpy(), vol / vol.max(axis=(1, 2), keepdims=True),
                               atol=1e-5)


def test_import_fits_to_a_square_and_no_phase_gives_a_real_image(tmp_path):
    src = tmp_path / "rect.npy"
    np.save(src, _volume(2, 48)[:, :, 8:40])  # 48 x 32
    out = tmp_path / "o"
    import_images(ImportConfig(inputs=[str(src)], out=str(out), size=24, phase="none"))
    ds = MRISliceDataset(out, crop=24, crop_mode="kspace")
    assert ds[0]["image"].shape == (2, 24, 24) and float(ds[0]["image"][1].abs().max()) < 1e-5
    img = ds[0]["target"].numpy()
    assert img[:, :3].max() < 0.05 * img.max()  # the 48 x 32 slice was zero-padded left and right, not stretched


def test_nifti_4d_needs_a_chosen_frame(tmp_path):
    data = np.stack([_volume(3), 2 * _volume(3)], -1)  # [S, H, W, 2] -> stored as [H, W, S, 2]
    src = tmp_path / "dwi.nii.gz"
    nib.save(nib.Nifti1Image(np.moveaxis(data, 0, 2).astype(np.float32), np.eye(4)), src)
    with pytest.raises(ValueError, match=r"4D image .*--frame-axis"):
        read_volume(src)
    vol = read_volume(src, frame_axis=3, frame=1)
    np.testing.assert_allclose(vol, 2 * _volume(3), rtol=1e-5)
    singleton = tmp_path / "s0.nii.gz"  # [H, W, S, 1] (as dipy's S0_10slices) is a 3D volume
    nib.save(nib.Nifti1Image(np.moveaxis(_volume(3), 0, -1)[..., None].astype(np.float32), np.eye(4)), singleton)
    assert read_volume(singleton).shape == (3, 32, 32)


def test_bad_inputs_give_clear_errors_and_write_nothing(tmp_path, capsys):
    ct = _dicom(tmp_path / "ct.dcm", _volume(1)[0], modality="CT")
    with pytest.raises(ValueError, match="not an MR image .*'CT'"):
        read_volume(ct)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty stack"):
        read_volume(empty)
    np.save(tmp_path / "zero.npy", np.zeros((0, 8, 8)))
    with pytest.raises(ValueError, match="empty stack"):
        read_volume(tmp_path / "zero.npy")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="unknown image format"):
        read_volume(tmp_path / "notes.txt")
    good = tmp_path / "good.npy"
    np.save(good, _volume(2))
    out = tmp_path / "out"  # one bad input among good ones: an error, and no file written
    assert main(["mri", "import", "--inputs", f"{good},{ct}", "--out", str(out), "--size", "32"]) == 2
    assert "not an MR image" in capsys.readouterr().err and not out.exists()
    assert main(["mri", "import", "--inputs", str(good), "--out", str(out), "--size", "32"]) == 0
    assert main(["mri", "import", "--inputs", str(good), "--out", str(out), "--size", "32"]) == 2  # no overwrite
    assert "exist" in capsys.readouterr().err


def test_split_never_shares_a_volume(tmp_path):
    rng = np.random.default_rng(0)
    for seed in range(20):
        counts = rng.integers(1, 30, size=int(rng.integers(3, 12))).tolist()
        assigned = split_volumes(counts, (0.6, 0.2, 0.2), seed=seed)
        assert len(assigned) == len(counts) and set(assigned) == {"train", "val", "test"}
    srcs = []
    for k, s in enumerate([5, 3, 4, 2, 6]):
        np.save(tmp_path / f"v{k}.npy", _volume(s, 16, seed=k))
        srcs.append(str(tmp_path / f"v{k}.npy"))
    out = tmp_path / "split"
    import_images(ImportConfig(inputs=srcs, out=str(out), size=16, split=[0.6, 0.2, 0.2]))
    listing = json.loads((out / "split.json").read_text())
    sources = [e["source"] for part in listing.values() for e in part]
    assert sorted(sources) == sorted(srcs)  # each volume in exactly one split
    for part, entries in listing.items():
        for e in entries:
            with h5py.File(out / e["file"], "r") as hf:
                assert hf.attrs["source"] == Path(e["source"]).name and e["file"].startswith(part + "/")


def test_import_config_mirrors_its_yaml():
    assert from_dict(ImportConfig, load_yaml(ROOT / "configs" / "mri_import.yaml")) == ImportConfig()
