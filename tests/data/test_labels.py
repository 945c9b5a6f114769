import json

import numpy as np
import pytest

from prdit.data.io import Volume, write_volume
from prdit.data.labels import (
    LABELS,
    PHANTOM_LABELS,
    TOTALSEGMENTATOR,
    TOTALSEGMENTATOR_TABLE,
    find_label_maps,
    label_path,
    label_table,
    read_label_map,
    read_label_table,
    table_for,
    totalsegmentator_to_prdit,
    write_label_table,
)
from prdit.errors import DataError


def _image(shape=(6, 7, 8)) -> Volume:
    """An image grid [D, H, W] with anisotropic spacing and an origin away from 0."""
    return Volume(array=np.zeros(shape, np.int16), spacing=(0.7, 0.8, 2.5), origin=(-10.0, -12.0, 100.0),
                  direction=np.eye(3))


def _write_map(path, array, like: Volume, **geometry) -> None:
    volume = Volume(array=array, spacing=geometry.get("spacing", like.spacing),
                    origin=geometry.get("origin", like.origin), direction=geometry.get("direction", like.direction))
    write_volume(path, volume)


def test_totalsegmentator_table_maps_every_total_class_onto_prdit_labels():
    table = label_table(TOTALSEGMENTATOR)
    assert sorted(table.to_prdit) == list(range(118))  # background and the 117 classes of the 'total' task
    names = read_label_table(TOTALSEGMENTATOR_TABLE)
    assert (names[16], names[39], names[94], names[116], names[117]) == (
        "trachea", "vertebrae_T5", "rib_left_3", "sternum", "costal_cartilages")
    mapping = totalsegmentator_to_prdit()
    assert set(mapping.values()) <= set(PHANTOM_LABELS)
    assert {mapping[f"rib_{side}_{i}"] for side in ("left", "right") for i in range(1, 13)} == {"ribs"}
    assert mapping["lung_upper_lobe_left"] == mapping["lung_lower_lobe_left"] == "lung_left"
    assert mapping["lung_middle_lobe_right"] == "lung_right"
    assert table.to_prdit[39] == LABELS["vertebrae"] and table.to_prdit[51] == LABELS["heart"]
    assert table.to_prdit[0] == LABELS["background"] and table.to_prdit[69] == LABELS["background"]  # humerus


def test_user_tables_in_csv_and_json_use_prdit_or_totalsegmentator_names(tmp_path):
    csv_table = tmp_path / "mine.csv"
    csv_table.write_text("value,structure\n0,background\n3,rib_left_7\n9,liver\n")
    assert read_label_table(csv_table) == {0: "background", 3: "rib_left_7", 9: "liver"}
    assert label_table(csv_table).to_prdit == {0: 0, 3: LABELS["ribs"], 9: LABELS["liver"]}
    json_table = tmp_path / "mine.json"
    json_table.write_text(json.dumps({"0": "background", "2": "lung_upper_lobe_right"}))
    assert label_table(json_table).to_prdit == {0: 0, 2: LABELS["lung_right"]}
    # prdit's own table reads back as the identity.
    assert label_table(write_label_table(tmp_path / "labels")).to_prdit == {i: i for i in range(len(PHANTOM_LABELS))}


@pytest.mark.parametrize("content, message", [
    ("0,background\n1,kidney\n", "'kidney'"),
    ("0,background\n0,liver\n", "appears twice"),
    ("0,background\nx1,liver\n", "not an integer"),
    ("0,background\n4,\n", "has no name"),
    ("", "empty"),
])
def test_bad_user_table_names_the_file(tmp_path, content, message):
    path = tmp_path / "table.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as raised:
        label_table(path)
    assert str(path) in str(raised.value)


def test_bad_json_table_and_missing_table(tmp_path):
    path = tmp_path / "table.json"
    path.write_text('["background", "liver"]')
    with pytest.raises(DataError, match="index -> name") as raised:
        label_table(path)
    assert str(path) in str(raised.value)
    with pytest.raises(DataError, match="no such label table"):
        label_table(tmp_path / "absent.csv")
    # A label map with neither a table given nor labels.json beside it: say how to give one.
    with pytest.raises(DataError, match="--label-table"):
        table_for(tmp_path / "labels" / "scan.nii.gz", None)


def test_label_map_is_read_into_prdit_indices(tmp_path):
    image = _image()
    values = np.zeros(image.array.shape, np.int16)
    values[1:3, 2:4, 3:5] = 116  # TotalSegmentator's sternum
    values[4, :, :] = 5  # liver
    path = tmp_path / "scan.nii.gz"
    _write_map(path, values, image)
    labels = read_label_map(path, label_table(TOTALSEGMENTATOR), image)
    assert labels.dtype == np.uint8
    expected = np.zeros(image.array.shape, np.uint8)
    expected[1:3, 2:4, 3:5] = LABELS["sternum"]
    expected[4] = LABELS["liver"]
    np.testing.assert_array_equal(labels, expected)
    # Whole numbers stored as floats are labels too.
    _write_map(path, values.astype(np.float32), image)
    np.testing.assert_array_equal(read_label_map(path, label_table(TOTALSEGMENTATOR), image), expected)


@pytest.mark.parametrize("case, message", [
    ("unknown value", "label value\\(s\\) 200 are not in the label table"),
    ("negative value", "label value\\(s\\) -1 are not in the label table"),
    ("fractions", "must be integers"),
    ("NaN", "NaN"),
    ("grid", "voxels"),
    ("spacing", "spacing"),
    ("origin", "origin"),
    ("orientation", "orientation"),
    ("no geometry", "needs its geometry"),
])
def test_bad_label_maps_name_the_file(tmp_path, case, message):
    image = _image()
    values = np.zeros(image.array.shape, np.float32)
    path = tmp_path / "scan.nii.gz"
    geometry = {}
    if case == "unknown value":
        values[0, 0, 0] = 200
    elif case == "negative value":
        values[0, 0, 0] = -1
    elif case == "fractions":
        values[2, 2, 2] = 2.5  # an interpolated map
    elif case == "NaN":
        values[2, 2, 2] = np.nan
    elif case == "grid":
        values = values[:, :, :-1]
    elif case == "spacing":
        geometry["spacing"] = (0.7, 0.8, 3.0)
    elif case == "origin":
        geometry["origin"] = (-10.0, -12.0, 102.5)  # one slice off
    elif case == "orientation":
        geometry["direction"] = np.diag([-1.0, -1.0, 1.0])  # the same voxels, RAS instead of LPS
    elif case == "no geometry":
        path = tmp_path / "scan.npy"
    _write_map(path, values, image, **geometry)
    with pytest.raises(DataError, match=message) as raised:
        read_label_map(path, label_table(TOTALSEGMENTATOR), image)
    assert str(path) in str(raised.value)


def test_label_maps_pair_with_their_scans_by_name(tmp_path):
    scans = [tmp_path / "a.npz", tmp_path / "sub" / "b.npz", tmp_path / "LIDC-0001"]
    for scan in scans[:2]:
        scan.parent.mkdir(parents=True, exist_ok=True)
        scan.write_bytes(b"")
    scans[2].mkdir()
    for scan in scans:
        label_path(scan).parent.mkdir(parents=True, exist_ok=True)
        label_path(scan).write_bytes(b"")
    (tmp_path / "labels" / "labels.json").write_text("{}")  # the table is not a label map
    assert label_path(scans[0]) == tmp_path / "labels" / "a.nii.gz"
    assert find_label_maps(tmp_path, scans) == {scan: label_path(scan) for scan in scans}
    # A label map whose scan is missing (a typo in a name, a deleted scan) is an error naming it.
    with pytest.raises(DataError, match="label map with no scan") as raised:
        find_label_maps(tmp_path, [scans[0], scans[2]])
    assert str(label_path(scans[1])) in str(raised.value)
    (tmp_path / "labels" / "a.nii").write_bytes(b"")
    with pytest.raises(DataError, match="a second label map"):
        find_label_maps(tmp_path, scans)
