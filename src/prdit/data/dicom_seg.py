"""Label maps as DICOM Segmentation (SEG) objects that reference their CT series (highdicom).

One SEG file per label map, written beside the CT series it segments: a binary segmentation with
one segment per label present in the map, each segment labelled with the label's name (the model's
label table), every frame of every segment kept (empty ones too), so the SEG carries the whole grid
by itself. It references the series' instances, shares its Study and Frame of Reference, and takes
its patient from the series (synthetic, :mod:`prdit.data.dicom_writer`). Index 0 named
``background`` ("no structure labelled") is no segment: a voxel in no segment reads back as it.

The SEG's Series and SOP Instance UIDs come from the same key and index as the CT series' (roles
``segmentation series`` and ``segmentation``), so writing the same map again gives the same UIDs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prdit.data.dicom_writer import LO_MAX, series_uid
from prdit.data.volume import Volume
from prdit.errors import DataError

BACKGROUND = "background"
"""The label that is no segment: voxels outside every segment."""
SEG_SERIES_NUMBER = 2  # the CT series is 1
SEG_SUFFIX = ".dcm"


def _segment_descriptions(present: Sequence[tuple[int, str]]):
    """One highdicom segment description per ``(segment number, label name)``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import prdit

    algorithm = hd.AlgorithmIdentificationSequence(name="prdit", version=prdit.__version__,
                                                   family=codes.DCM.ArtificialIntelligence)
    # The name says which structure; the coded type stays generic because the label set is the model's own.
    return [hd.seg.SegmentDescription(segment_number=number, segment_label=name[:LO_MAX],
                                      segmented_property_category=codes.SCT.AnatomicalStructure,
                                      segmented_property_type=codes.SCT.Tissue,
                                      algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                      algorithm_identification=algorithm)
            for number, name in present]


def write_dicom_seg(labels: np.ndarray, names: Sequence[str], ct_folder: str | Path, path: str | Path, *, key: str,
                    index: int, model_name: str | None = None) -> Path:
    """Write the label map ``labels`` ``[D, H, W]`` (indices into ``names``) as a DICOM SEG file ``path`` that
    segments the CT series in ``ct_folder`` (written by :func:`~prdit.data.dicom_writer.write_dicom_series` from
    a volume on the map's grid); ``key`` and ``index`` as that series' give its UIDs."""
    import highdicom as hd
    import pydicom

    import prdit

    ct_folder, path = Path(ct_folder), Path(path)
    slices = [pydicom.dcmread(p) for p in sorted(ct_folder.glob("*.dcm"))]
    if not slices:
        raise DataError(f"{ct_folder}: no CT slices to reference; write the CT series before its segmentation")
    labels = np.asarray(labels)
    if labels.shape != (len(slices), int(slices[0].Rows), int(slices[0].Columns)):
        raise DataError(f"{path}: label map of shape {list(labels.shape)} for a CT series of {len(slices)} slices "
                        f"of {slices[0].Rows} x {slices[0].Columns}; the map must lie on the series' grid")
    found = [int(v) for v in np.unique(labels)]
    unknown = [v for v in found if not 0 <= v < len(names)]
    if unknown:
        raise DataError(f"{path}: label value(s) {unknown[:10]} are not in the label table of {len(names)} labels")
    present = [(v, names[v]) for v in found if names[v] != BACKGROUND]
    # The series' slices are sorted by instance number, which follows the slice axis (the writer's order), so
    # frame k of the map is slice file k; highdicom matches them by position all the same.
    segment_of = np.zeros(len(names), dtype=np.uint8)
    for number, (value, _) in enumerate(present, 1):
        segment_of[value] = number
    pixel_array = segment_of[labels]
    descriptions = _segment_descriptions([(number, name) for number, (_, name) in enumerate(present, 1)])
    if not descriptions:  # an all-background map: a SEG needs a segment, so background is written as one
        descriptions = _segment_descriptions([(1, names[0])])
        pixel_array = np.ones_like(pixel_array)
    seg = hd.seg.Segmentation(
        source_images=slices, pixel_array=pixel_array, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=series_uid(key, index, "segmentation series"),
        series_number=SEG_SERIES_NUMBER, sop_instance_uid=series_uid(key, index, "segmentation"),
        instance_number=1, manufacturer="prdit", manufacturer_model_name=(model_name or "converted volume")[:LO_MAX],
        software_versions=prdit.__version__, device_serial_number="none", content_label="LABELS",
        content_description="label map of the CT series", series_description=slices[0].SeriesDescription,
        omit_empty_frames=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    seg.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)
    return path


def read_dicom_seg(path: str | Path, names: Sequence[str]) -> Volume:
    """A DICOM SEG file as a uint8 label map ``Volume`` ``[D, H, W]`` of indices into ``names`` (segments matched by
    their labels), with its geometry as :func:`~prdit.data.io.read_volume` gives a volume (ITK/LPS)."""
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as err:  # noqa: BLE001 (pydicom and highdicom raise many types for a file that is no SEG)
        raise DataError(f"{path}: not a readable DICOM SEG ({err})") from err
    index_of = {name: k for k, name in enumerate(names)}
    value_of = np.zeros(seg.number_of_segments + 1, dtype=np.uint8)
    value_of[0] = index_of.get(BACKGROUND, 0)
    for item in seg.SegmentSequence:
        name = str(item.SegmentLabel)
        if name not in index_of:
            raise DataError(f"{path}: segment {item.SegmentNumber} is labelled {name!r}, which the label table "
                            f"({', '.join(names)}) does not name; read it with the table it was written with")
        value_of[int(item.SegmentNumber)] = index_of[name]
    volume = seg.get_volume(combine_segments=True, relabel=False, dtype=np.uint8)
    affine = np.asarray(volume.affine, dtype=np.float64)
    # highdicom's array axes are (slice, row, column); ITK's x, y, z are (column, row, slice).
    axes = affine[:3, :3][:, ::-1]
    spacing = np.linalg.norm(axes, axis=0)
    array, origin, direction = np.asarray(volume.array), affine[:3, 3], axes / spacing
    if np.linalg.det(direction) < 0:  # slices against row x column: the order a CT series reads back in
        origin = origin + (array.shape[0] - 1) * axes[:, 2]
        direction = direction * np.array([1.0, 1.0, -1.0])
        array = array[::-1]
    return Volume(array=np.ascontiguousarray(value_of[array]), spacing=tuple(float(s) for s in spacing),
                  origin=tuple(float(o) for o in origin), direction=direction)
