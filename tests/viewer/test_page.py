import gzip

import numpy as np
import pytest
from typer.testing import CliRunner

from prdit.cli import app
from prdit.data.io import Volume, read_volume, write_volume
from prdit.data.labels import LABELS, PHANTOM_LABELS, label_path, write_label_map
from prdit.data.phantoms import generate_phantom, write_phantoms
from prdit.errors import ConfigError, DataError
from prdit.viewer import write_viewer
from prdit.viewer.page import (LABEL_COLOURS, build_page, decode_labels, decode_volume, page_volume,
                               read_page_data, shown_shape)


def view(*args):
    """Run ``prdit view`` in-process; the project's errors come back as ``result.exception``."""
    return CliRunner().invoke(app, ["view", *map(str, args)])


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_phantoms(3, 16, tmp_path_factory.mktemp("phantoms"), seed=3)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Two phantoms with their label maps in labels/ beside them, as ``prdit phantoms --labels`` writes them."""
    return write_phantoms(2, 16, tmp_path_factory.mktemp("labelled"), seed=5, labels=True)


def test_the_page_is_self_contained():
    page = build_page([page_volume(generate_phantom(16, seed=0), "a <b> & </script>")])
    lowered = page.lower()
    assert "http://" not in lowered and "https://" not in lowered and "//cdn" not in lowered
    assert "<script src" not in lowered and "<link" not in lowered and "@import" not in lowered
    assert page.count("</script>") == 2  # the data and the script; the name cannot close either
    assert read_page_data(page)["volumes"][0]["name"] == "a <b> & </script>"


def test_embedded_int16_is_the_exact_hu_of_the_file(tmp_path):
    path = write_volume(tmp_path / "p.nii.gz", generate_phantom(24, seed=1))
    volume = read_volume(path)
    write_viewer([path], tmp_path / "view.html")
    entry = read_page_data((tmp_path / "view.html").read_text())["volumes"][0]
    shown = decode_volume(entry)
    assert shown.dtype == np.int16 and shown.shape == (24, 24, 24) and not entry["downsampled"]
    np.testing.assert_array_equal(shown, np.rint(volume.array))
    assert entry["spacing"] == pytest.approx(volume.spacing) and entry["name"] == "p"


def test_hu_are_rounded_and_clipped_to_int16():
    array = np.array([-40000.0, -32768.4, -1000.6, -0.4, 0.6, 1234.5, 32767.2, 1e6], np.float32).reshape(2, 2, 2)
    shown = decode_volume(page_volume(Volume(array=array), "v").to_json())
    assert shown.ravel().tolist() == [-32768, -32768, -1001, 0, 1, 1234, 32767, 32767]  # 1234.5: to even


def test_a_volume_above_max_size_is_downsampled_with_its_extent_and_a_note():
    d, h, w = 20, 60, 200
    x = np.arange(w, dtype=np.float32)
    array = np.broadcast_to(10.0 * x, (d, h, w)).copy()  # a ramp along x: 10 HU per voxel
    volume = Volume(array=array, spacing=(0.5, 1.0, 2.0))
    shown = page_volume(volume, "big", max_size=50)
    assert shown.hu.shape == shown_shape((d, h, w), 50) == (5, 15, 50) and shown.downsampled
    assert shown.spacing == pytest.approx((2.0, 4.0, 8.0))  # extent (100, 60, 40) mm is kept
    assert shown.original_shape == (d, h, w) and shown.original_spacing == (0.5, 1.0, 2.0)
    # new voxel i covers old voxels 4i..4i+3, its centre is old x = 4i + 1.5
    np.testing.assert_allclose(shown.hu[2, 7, 1:-1], 10.0 * (4 * np.arange(1, 49) + 1.5), atol=1)
    page = build_page([shown, page_volume(generate_phantom(16), "small", max_size=50)])
    assert "big: downsampled for this page, 20×60×200 → 5×15×50 voxels" in page
    assert "small: downsampled" not in page
    data = read_page_data(page)["volumes"]
    assert [v["downsampled"] for v in data] == [True, False] and data[0]["original_shape"] == [20, 60, 200]


def test_a_volume_at_max_size_is_kept():
    volume = generate_phantom(16)
    shown = page_volume(volume, "v", max_size=16)
    assert not shown.downsampled and shown.spacing == pytest.approx(volume.spacing)


def test_cli_on_a_folder_a_list_file_and_single_files(phantoms, tmp_path):
    out = tmp_path / "folder.html"
    result = ok(view(phantoms[0].parent, "--out", out))
    assert "3 volume(s)" in result.output and str(out) in result.output
    data = read_page_data(out.read_text())
    assert [v["name"] for v in data["volumes"]] == ["phantom_00000", "phantom_00001", "phantom_00002"]
    assert data["window"] == {"name": "lung", "level": -600.0, "width": 1500.0} and not data["grid"]
    for entry, path in zip(data["volumes"], phantoms):
        np.testing.assert_array_equal(decode_volume(entry), np.rint(read_volume(path).array))

    listing = tmp_path / "list.txt"
    listing.write_text(f"# two of them\n{phantoms[2]}\n{phantoms[0]}\n")
    ok(view(listing, "--out", tmp_path / "list.html", "--grid", "--window", "bone"))
    data = read_page_data((tmp_path / "list.html").read_text())
    assert [v["name"] for v in data["volumes"]] == ["phantom_00002", "phantom_00000"]
    assert data["grid"] and data["window"]["name"] == "bone"

    ok(view(phantoms[1], phantoms[1], "--out", tmp_path / "one.html", "--max-size", "8"))
    data = read_page_data((tmp_path / "one.html").read_text())
    assert [v["shape"] for v in data["volumes"]] == [[8, 8, 8]] * 2
    names = [v["name"] for v in data["volumes"]]  # the same file twice: the names stay apart
    assert names[0].endswith("/phantom_00001") and names[1] == f"{names[0]} (2)"


def test_cli_refuses_to_overwrite_without_overwrite(phantoms, tmp_path):
    out = tmp_path / "view.html"
    out.write_text("mine")
    result = view(phantoms[0], "--out", out)
    assert isinstance(result.exception, ConfigError) and "--overwrite" in str(result.exception)
    assert out.read_text() == "mine"
    ok(view(phantoms[0], "--out", out, "--overwrite"))
    assert len(read_page_data(out.read_text())["volumes"]) == 1


def test_cli_errors_name_the_file(phantoms, tmp_path):
    out = tmp_path / "view.html"
    missing = tmp_path / "nope.nii.gz"
    result = view(phantoms[0], missing, "--out", out)
    assert isinstance(result.exception, DataError) and str(missing) in str(result.exception)

    corrupt = tmp_path / "corrupt.nii.gz"
    data = gzip.compress(gzip.decompress(phantoms[0].read_bytes()))
    corrupt.write_bytes(data[: len(data) // 2])
    result = view(phantoms[0], corrupt, "--out", out)
    assert isinstance(result.exception, DataError) and str(corrupt) in str(result.exception)
    assert "truncated or corrupt" in str(result.exception)

    empty = tmp_path / "empty"
    empty.mkdir()
    result = view(empty, "--out", out)
    assert isinstance(result.exception, DataError) and "holds no volume files" in str(result.exception)

    result = view(phantoms[0], "--out", out, "--window", "brain")
    assert isinstance(result.exception, ConfigError) and "lung, mediastinal, bone, overview" in str(result.exception)
    assert not out.exists() and not list(tmp_path.glob(".partial*"))


def test_write_viewer_takes_volumes_names_and_windows(tmp_path):
    volumes = [generate_phantom(16, seed=0), Volume(array=np.zeros((4, 5, 6), np.float32), spacing=(1, 2, 3))]
    path = write_viewer(volumes, tmp_path / "v.html", names=["first", "second"], window=(40.0, 400.0), shown=[1])
    data = read_page_data(path.read_text())
    assert [v["name"] for v in data["volumes"]] == ["first", "second"] and data["shown"] == [1]
    assert data["window"] == {"name": None, "level": 40.0, "width": 400.0}
    assert data["volumes"][1]["shape"] == [4, 5, 6] and data["volumes"][1]["spacing"] == [1.0, 2.0, 3.0]
    with pytest.raises(DataError, match="1 name"):
        write_viewer(volumes, tmp_path / "w.html", names=["one"])
    with pytest.raises(ConfigError, match="positive width"):
        write_viewer(volumes, tmp_path / "w.html", window=(0.0, 0.0))
    with pytest.raises(ConfigError, match="shown volumes"):
        write_viewer(volumes, tmp_path / "w.html", shown=[2])
    assert not (tmp_path / "w.html").exists()


def test_a_paired_label_map_comes_with_the_volume_and_a_legend(labelled, tmp_path):
    out = tmp_path / "view.html"
    result = ok(view(labelled[0].parent, "--out", out))
    assert "2 volume(s), 2 with a label map" in result.output
    page = out.read_text()
    data = read_page_data(page)
    maps = [read_volume(label_path(path)).array for path in labelled]
    for entry, expected in zip(data["volumes"], maps):
        shown = decode_labels(entry)
        assert shown.dtype == np.uint8 and shown.shape == tuple(entry["shape"])
        np.testing.assert_array_equal(shown, expected)
    legend = data["labels"]
    assert legend["names"] == list(PHANTOM_LABELS)
    present = set(np.unique(np.concatenate([m.ravel() for m in maps])).tolist()) - {LABELS["background"]}
    assert legend["present"] == sorted(present) and {LABELS["lung_left"], LABELS["heart"]} <= present
    # one colour per label, each its own, the same on every page
    assert set(LABEL_COLOURS) == set(PHANTOM_LABELS) and len(set(LABEL_COLOURS.values())) == len(PHANTOM_LABELS)
    assert legend["colors"] == ["#{:02x}{:02x}{:02x}".format(*LABEL_COLOURS[name]) for name in PHANTOM_LABELS]
    assert all(len(c) == 7 and c.startswith("#") for c in legend["colors"])
    other = read_page_data(build_page([page_volume(read_volume(labelled[1]), "one", labels=maps[1])]))["labels"]
    assert other["colors"] == legend["colors"]
    # a label map is one byte a voxel: the page grows by less than the volume's own two bytes
    plain = build_page([page_volume(read_volume(path), path.name) for path in labelled])
    assert len(plain) < len(page) < 1.6 * len(plain)


def test_without_a_label_map_the_page_has_no_overlay(phantoms, tmp_path):
    out = tmp_path / "view.html"
    result = ok(view(phantoms[0], "--out", out))
    assert "label map" not in result.output
    data = read_page_data(out.read_text())
    assert data["labels"] is None and data["volumes"][0]["labels"] is None
    assert '<span id="prdit-overlay-controls" hidden>' in out.read_text()


def test_labels_option_takes_one_map_or_a_folder_of_maps(labelled, tmp_path):
    maps = [read_volume(label_path(path)).array for path in labelled]
    ok(view(labelled[1], "--labels", label_path(labelled[1]), "--out", tmp_path / "one.html"))
    np.testing.assert_array_equal(decode_labels(read_page_data((tmp_path / "one.html").read_text())["volumes"][0]),
                                  maps[1])
    # a folder elsewhere, named like the volumes; the second volume has no map there and is shown without one
    elsewhere = tmp_path / "segmentations"
    elsewhere.mkdir()
    (elsewhere / "phantom_00000.nii.gz").write_bytes(label_path(labelled[0]).read_bytes())
    (elsewhere / "labels.json").write_bytes((label_path(labelled[0]).parent / "labels.json").read_bytes())
    result = ok(view(*labelled, "--labels", elsewhere, "--out", tmp_path / "folder.html"))
    assert "1 with a label map" in result.output
    volumes = read_page_data((tmp_path / "folder.html").read_text())["volumes"]
    np.testing.assert_array_equal(decode_labels(volumes[0]), maps[0])
    assert volumes[1]["labels"] is None

    result = view(*labelled, "--labels", label_path(labelled[0]), "--out", tmp_path / "two.html")
    assert isinstance(result.exception, ConfigError) and "one label map for 2 volumes" in str(result.exception)
    result = view(labelled[0], "--labels", tmp_path, "--out", tmp_path / "none.html")
    assert isinstance(result.exception, DataError) and "holds no label map" in str(result.exception)
    result = view(labelled[0], "--labels", tmp_path / "nope.nii.gz", "--out", tmp_path / "none.html")
    assert isinstance(result.exception, DataError) and "no such label map" in str(result.exception)
    with pytest.raises(DataError, match="no volume has a label map"):
        write_viewer([generate_phantom(16)], tmp_path / "none.html", label_table="totalsegmentator")
    assert not (tmp_path / "none.html").exists()


def test_a_label_map_off_the_volume_grid_or_with_unknown_values_names_the_file(tmp_path):
    volume = read_volume(write_phantoms(1, 16, tmp_path / "set", seed=1, labels=True)[0])
    path = tmp_path / "set" / "phantom_00000.nii.gz"
    out = tmp_path / "view.html"
    label_file = label_path(path)

    write_label_map(label_file, np.ones((16, 16, 12), np.uint8), Volume(array=np.zeros((16, 16, 12)),
                                                                        spacing=volume.spacing))
    result = view(path, "--out", out)
    assert isinstance(result.exception, DataError) and str(label_file) in str(result.exception)
    assert "its image's grid" in str(result.exception)

    shifted = Volume(array=volume.array, spacing=volume.spacing, origin=tuple(o + 5.0 for o in volume.origin),
                     direction=volume.direction)
    write_label_map(label_file, np.ones((16, 16, 16), np.uint8), shifted)
    result = view(path, "--out", out)
    assert isinstance(result.exception, DataError) and str(label_file) in str(result.exception)
    assert "origin" in str(result.exception)

    unknown = np.ones((16, 16, 16), np.uint8)
    unknown[3, 4, 5] = 99
    write_label_map(label_file, unknown, volume)
    result = view(path, "--out", out)
    assert isinstance(result.exception, DataError) and str(label_file) in str(result.exception)
    assert "99" in str(result.exception)

    (label_file.parent / "labels.json").unlink()
    write_label_map(label_file, np.ones((16, 16, 16), np.uint8), volume)
    result = view(path, "--out", out)
    assert isinstance(result.exception, DataError) and "--label-table" in str(result.exception)
    assert not out.exists()
    ok(view(path, "--out", out, "--label-table", "totalsegmentator"))
    # TotalSegmentator's 1, the spleen, is part of prdit's abdomen
    assert read_page_data(out.read_text())["labels"]["present"] == [LABELS["abdomen"]]


def test_a_downsampled_label_map_takes_the_label_at_each_voxel_centre():
    d, h, w = 20, 60, 200
    labels = np.broadcast_to(np.arange(w) % len(PHANTOM_LABELS), (d, h, w)).astype(np.uint8)
    shown = page_volume(Volume(array=np.zeros((d, h, w), np.float32)), "big", max_size=50, labels=labels)
    assert shown.labels.shape == shown.hu.shape == (5, 15, 50) and shown.labels.dtype == np.uint8
    # new voxel i covers old voxels 4i..4i+3; the one at its centre (4i + 1.5) is taken as 4i + 2
    np.testing.assert_array_equal(shown.labels[2, 7], (4 * np.arange(50) + 2) % len(PHANTOM_LABELS))
    with pytest.raises(DataError, match="its volume's grid"):
        page_volume(Volume(array=np.zeros((d, h, w), np.float32)), "v", labels=labels[:, :, :10])
    with pytest.raises(DataError, match="label indices"):
        page_volume(Volume(array=np.zeros((2, 2, 2), np.float32)), "v", labels=np.full((2, 2, 2), 200))
