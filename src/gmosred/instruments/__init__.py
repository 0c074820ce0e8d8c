"""GMOS instrument facts (detector sets, amplifiers, geometry, scales, ROIs, zero points)."""
from .gmos import (  # noqa: F401
    Amplifier, CCDPlacement, DetectorSet, NamedROI, UnknownInstrumentError, amplifier, detector_set,
    detector_sets, filter_band, fringes, filter_wavelengths, full_well, gain_setting, named_rois,
    nominal_zeropoint, roi_name, static_mask_file, static_masks, StaticMask,
)
