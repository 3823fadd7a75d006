"""fastMRI data for gendiff (installed as ``gendiff.mri``): loading and synthetic fastMRI-format data."""

from gendiff.mri.data import MRISliceDataset, SliceTransform, check_fastmri_file, load_images, magnitude
from gendiff.mri.synthetic import make_phantom, make_volume, write_synthetic_dataset

__all__ = [
    "MRISliceDataset",
    "SliceTransform",
    "check_fastmri_file",
    "load_images",
    "magnitude",
    "make_phantom",
    "make_volume",
    "write_synthetic_dataset",
]
