"""`prdit sample --labels`: each volume from its map, written with it (NIfTI and DICOM SEG); bad maps refused
before anything is written; the maps and the guidance scale in the manifest and the run's key (resume);
torchrun ranks each sample their volumes with their maps."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from prdit.cli import app
from prdit.data.dicom_seg import read_dicom_seg
from prdit.data.io import Volume, file_sha256, read_volume, write_volume
from prdit.data.labels import LABELS, PHANTOM_LABELS, write_label_map, write_label_table
from prdit.errors import ConfigError, DataError
from prdit.generation.pipeline import PRDiTPipeline

SIZE = 16
STEPS = "3"


def sample(*args):
    """Run ``prdit sample`` in-process; the project's errors come back as ``result.exception``."""
    return CliRunner().invoke(app, ["sample", *map(str, args), "--steps", STEPS, "--quiet", "--no-previews"])


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def grid(spacing, direction=None) -> Volume:
    """An empty volume on the model's grid, the geometry a label map is written with."""
    return Volume(array=np.zeros((SIZE,) * 3, dtype=np.float32), spacing=spacing, origin=(5.0, -3.0, 1.0),
                  direction=np.eye(3) if direction is None else direction)


@pytest.fixture(scope="module")
def cond_dir(make_conditional_model, tmp_path_factory, spacing):
    """A tiny conditional PRDiT-T/6/1 (both stages see the map) with every weight off its initialisation."""
    return make_conditional_model(tmp_path_factory.mktemp("cond"), SIZE, spacing, seed=1)


def phantom_map(seed: int) -> np.ndarray:
    """A label map of boxes of a few structures ``[D, H, W]``."""
    rng = np.random.default_rng(seed)
    labels = np.full((SIZE,) * 3, LABELS["torso_fat"], dtype=np.uint8)
    labels[:, :2] = LABELS["background"]
    for name in ("lung_left", "lung_right", "heart", "aorta"):
        lo = rng.integers(0, SIZE - 6, 3)
        labels[lo[0]:lo[0] + 6, lo[1]:lo[1] + 5, lo[2]:lo[2] + 4] = LABELS[name]
    return labels


@pytest.fixture(scope="module")
def maps_dir(tmp_path_factory, spacing):
    """Two maps on the model's grid with the labels.json of `prdit phantoms --labels` beside them."""
    folder = tmp_path_factory.mktemp("maps") / "labels"
    for k in range(2):
        write_label_map(folder / f"phantom_{k:05d}.nii.gz", phantom_map(k), grid(spacing))
    write_label_table(folder)
    return folder


@pytest.fixture(scope="module")
def paired_run(cond_dir, maps_dir, tmp_path_factory):
    """2 maps x 2 volumes, guidance scale 2, with x̂₀."""
    out = tmp_path_factory.mktemp("paired")
    ok(sample(cond_dir, "--labels", maps_dir, "--per-map", 2, "--guidance-scale", 2, "--seed", 4, "--out", out,
              "--save-x0", "--batch", 3))
    return out


def test_each_volume_is_generated_from_its_map_and_written_with_it(cond_dir, maps_dir, paired_run):
    names = sorted(p.name for p in paired_run.glob("sample_*.nii.gz"))
    assert names == [f"sample_0000{i}.nii.gz" for i in range(4)]
    pipe = PRDiTPipeline.from_pretrained(cond_dir, device="cpu")
    for i in range(4):
        source = maps_dir / f"phantom_{i // 2:05d}.nii.gz"
        volume, labels = read_volume(paired_run / names[i]), read_volume(paired_run / "labels" / names[i])
        np.testing.assert_array_equal(labels.array, phantom_map(i // 2))
        assert labels.array.dtype.kind in "iu"
        np.testing.assert_allclose(labels.spacing, volume.spacing)
        np.testing.assert_allclose(labels.origin, volume.origin)
        np.testing.assert_allclose(labels.direction, volume.direction)
        # bit for bit the pipeline's volume of this index, guided by this map at w = 2
        expected = pipe(1, labels=source, indices=[i], seed=4, steps=int(STEPS), guidance_scale=2.0,
                        output_type="model").volumes
        assert np.array_equal(read_volume(paired_run / "x0" / names[i]).array, expected[0, 0].numpy())
    assert not np.array_equal(read_volume(paired_run / names[0]).array, read_volume(paired_run / names[2]).array)
    table = json.loads((paired_run / "labels" / "labels.json").read_text())
    assert table == {str(i): name for i, name in enumerate(PHANTOM_LABELS)}


def test_without_the_option_the_cli_samples_at_the_pipeline_s_default_guidance_scale(cond_dir, maps_dir, tmp_path):
    from prdit.generation.config import SamplingConfig

    ok(sample(cond_dir, "--labels", maps_dir / "phantom_00000.nii.gz", "--seed", 4, "--out", tmp_path / "cli"))
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert manifest["guidance_scale"] == SamplingConfig().guidance_scale == 2.0  # one source: the measured default
    for w in (2, 1):
        ok(sample(cond_dir, "--labels", maps_dir / "phantom_00000.nii.gz", "--seed", 4, "--guidance-scale", w,
                  "--out", tmp_path / f"w{w}"))
    volume = read_volume(tmp_path / "cli" / "sample_00000.nii.gz").array
    assert np.array_equal(volume, read_volume(tmp_path / "w2" / "sample_00000.nii.gz").array)
    assert not np.array_equal(volume, read_volume(tmp_path / "w1" / "sample_00000.nii.gz").array)


def test_the_manifest_records_each_volume_s_map_and_the_guidance_scale(maps_dir, paired_run):
    manifest = json.loads((paired_run / "manifest.json").read_text())
    assert manifest["guidance_scale"] == 2.0
    assert manifest["labels"]["per_map"] == 2
    assert manifest["labels"]["label_table"] == {name: i for i, name in enumerate(PHANTOM_LABELS)}
    for entry in manifest["volumes"]:
        source = maps_dir / f"phantom_{entry['index'] // 2:05d}.nii.gz"
        assert entry["label_map"] == {"source": str(source.resolve()), "sha256": file_sha256(source),
                                      "file": f"labels/sample_{entry['index']:05d}.nii.gz", "dicom_seg": None}


def test_a_list_file_or_one_map_names_the_maps_and_a_label_table_maps_their_values(cond_dir, maps_dir, spacing,
                                                                                   paired_run, tmp_path):
    # a list of the same maps (relative to the list) is the same run: the folder is complete
    (tmp_path / "maps.txt").write_text(f"# two maps\n{maps_dir.name}/phantom_00000.nii.gz\n\n"
                                       f"{maps_dir.name}/phantom_00001.nii.gz\n")
    shutil.copytree(maps_dir, tmp_path / maps_dir.name)
    result = ok(sample(cond_dir, "--labels", tmp_path / "maps.txt", "--per-map", 2, "--guidance-scale", 2,
                       "--seed", 4, "--out", paired_run, "--save-x0"))
    assert "generated 0, skipped 4" in result.output
    # one map in another numbering, read through --label-table: the model's indices come out
    own = {0: "background", 7: "torso_fat", 3: "lung_left", 4: "lung_right", 5: "heart", 6: "aorta"}
    (tmp_path / "table.csv").write_text("index,name\n" + "".join(f"{k},{v}\n" for k, v in own.items()))
    renumbered = np.zeros((SIZE,) * 3, dtype=np.uint8)
    for value, name in own.items():
        renumbered[phantom_map(0) == LABELS[name]] = value
    write_label_map(tmp_path / "own.nii.gz", renumbered, grid(spacing))
    out = tmp_path / "own"
    ok(sample(cond_dir, "--labels", tmp_path / "own.nii.gz", "--label-table", tmp_path / "table.csv", "--out", out))
    np.testing.assert_array_equal(read_volume(out / "labels" / "sample_00000.nii.gz").array, phantom_map(0))


def bad_maps(spacing):
    fine = phantom_map(0)
    unknown, nan, fraction = fine.astype(np.int16), fine.astype(np.float32), fine.astype(np.float32)
    unknown[3, 3, 3] = 99
    nan[1, 1, 1] = np.nan
    fraction[2, 2, 2] = 2.5
    turned = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    return {
        "unknown value": (unknown, grid(spacing), "99"),
        "NaN": (nan, grid(spacing), "NaN|not a number|finite"),
        "non-integer": (fraction, grid(spacing), "integers"),
        "other spacing": (fine, grid((1.0, 1.0, 1.0)), "spacing"),
        "other orientation": (fine, grid(spacing, turned), "orientation"),
        "other size": (fine[:8], Volume(array=np.zeros((8, SIZE, SIZE)), spacing=spacing), "voxels"),
    }


@pytest.mark.parametrize("case", ["unknown value", "NaN", "non-integer", "other spacing", "other orientation",
                                  "other size"])
def test_a_bad_map_is_refused_naming_the_file_before_anything_is_written(cond_dir, maps_dir, spacing, tmp_path,
                                                                          case):
    values, like, message = bad_maps(spacing)[case]
    folder = tmp_path / "maps"
    shutil.copytree(maps_dir, folder)
    path = folder / "phantom_00002.nii.gz"  # the last map: the first ones are fine
    write_volume(path, Volume(array=values, spacing=like.spacing, origin=like.origin, direction=like.direction))
    result = sample(cond_dir, "--labels", folder, "--out", tmp_path / "out")
    assert isinstance(result.exception, DataError), (result.output, result.exception)
    assert "phantom_00002.nii.gz" in str(result.exception)
    assert pytest.importorskip("re").search(message, str(result.exception)), str(result.exception)
    assert not (tmp_path / "out").exists()


def test_the_label_options_are_checked_against_the_model_and_each_other(cond_dir, model_dir, maps_dir, tmp_path):
    out = tmp_path / "out"
    cases = [
        ((cond_dir, "--labels", maps_dir, "--num-volumes", 3), "conflicts with --labels: 2 map"),
        ((cond_dir,), "--unconditional"),  # a conditional model without maps
        ((model_dir, "--labels", maps_dir), "unconditional model"),
        ((model_dir, "--unconditional"), "unconditional"),
        ((cond_dir, "--labels", maps_dir, "--unconditional"), "exclude each other"),
        ((cond_dir, "--unconditional", "--guidance-scale", 3), "go\\(es\\) with --labels"),
        ((cond_dir, "--labels", maps_dir, "--index", 2), "--index 2 is not a volume"),
    ]
    for args, message in cases:
        result = sample(*args, "--out", out)
        assert isinstance(result.exception, ConfigError), (args, result.output, result.exception)
        assert pytest.importorskip("re").search(message, str(result.exception)), (args, str(result.exception))
    assert not out.exists()
    ok(sample(cond_dir, "--unconditional", "--out", out))  # the null map: no label maps to write
    assert (out / "sample_00000.nii.gz").is_file() and not (out / "labels").exists()
    assert json.loads((out / "manifest.json").read_text())["labels"] is None


def test_a_killed_run_resumes_only_with_the_same_maps_and_guidance_scale(cond_dir, maps_dir, paired_run, spacing,
                                                                        tmp_path):
    out = tmp_path / "resumed"
    run = ("--labels", maps_dir, "--per-map", 2, "--guidance-scale", 2, "--seed", 4, "--out", out)
    ok(sample(cond_dir, *run, "--index", 1, "--index", 2))
    (out / "labels" / "sample_00002.nii.gz").unlink()  # killed between the volume and its map
    result = ok(sample(cond_dir, *run))
    assert "generated 3, skipped 1" in result.output
    for name in (f"sample_0000{i}.nii.gz" for i in range(4)):
        for sub in ("", "labels/"):
            assert np.array_equal(read_volume(out / f"{sub}{name}").array,
                                  read_volume(paired_run / f"{sub}{name}").array), sub + name
    assert [e["label_map"] for e in json.loads((out / "manifest.json").read_text())["volumes"]] == \
        [e["label_map"] for e in json.loads((paired_run / "manifest.json").read_text())["volumes"]]
    # another map's content, another guidance scale or another pairing is another run
    other = tmp_path / "other"
    shutil.copytree(maps_dir, other)
    write_label_map(other / "phantom_00001.nii.gz", phantom_map(7), grid(spacing))
    for changed in (("--labels", other, "--per-map", 2, "--guidance-scale", 2),
                    ("--labels", maps_dir, "--per-map", 2, "--guidance-scale", 3),
                    ("--labels", maps_dir, "--per-map", 1, "--guidance-scale", 2, "--index", 1)):
        result = sample(cond_dir, *changed, "--seed", 4, "--out", out)
        assert isinstance(result.exception, ConfigError) and "another run" in str(result.exception), changed


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy (dicom3tools) is not on PATH: apt-get install dicom3tools")
def test_format_both_writes_each_map_as_a_dicom_seg_of_its_series(cond_dir, maps_dir, tmp_path):
    out = tmp_path / "both"
    ok(sample(cond_dir, "--labels", maps_dir / "phantom_00001.nii.gz", "--format", "both", "--seed", 4,
              "--out", out))
    seg = out / "dicom" / "labels" / "sample_00000.dcm"
    back = read_dicom_seg(seg, PHANTOM_LABELS)
    nifti = read_volume(out / "labels" / "sample_00000.nii.gz")
    series = read_volume(out / "dicom" / "sample_00000")
    np.testing.assert_array_equal(back.array, nifti.array)
    for volume in (nifti, series):
        np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-4)
        np.testing.assert_allclose(back.origin, volume.origin, atol=1e-4)
        np.testing.assert_allclose(back.direction, volume.direction, atol=1e-4)
    entry = json.loads((out / "manifest.json").read_text())["volumes"][0]
    assert entry["label_map"]["dicom_seg"] == "dicom/labels/sample_00000.dcm"
    report = subprocess.run(["dciodvfy", str(seg)], capture_output=True, text=True)
    assert "Segmentation" in report.stdout + report.stderr and "Error" not in report.stdout + report.stderr
    # a series without its segmentation is not finished: a resumed run writes both again
    seg.unlink()
    result = ok(sample(cond_dir, "--labels", maps_dir / "phantom_00001.nii.gz", "--format", "both", "--seed", 4,
                       "--out", out))
    assert "generated 1" in result.output and seg.is_file()
    # the folder of series is still a set of CT volumes to `prdit evaluate` (the SEG folder is no series)
    from prdit.evaluation.volumes import list_volume_files

    assert list_volume_files(out / "dicom") == [out / "dicom" / "sample_00000"]
    # `prdit convert` of the run's NIfTI sample writes the same series and segmentation
    nifti_run = tmp_path / "nifti"
    ok(sample(cond_dir, "--labels", maps_dir / "phantom_00001.nii.gz", "--seed", 4, "--out", nifti_run))
    result = CliRunner().invoke(app, ["convert", str(nifti_run / "sample_00000.nii.gz"), "--to", "dicom", "--out",
                                      str(tmp_path / "converted")])
    assert result.exit_code == 0, (result.output, result.exception)
    converted = tmp_path / "converted" / "labels" / "sample_00000.dcm"
    np.testing.assert_array_equal(read_dicom_seg(converted, PHANTOM_LABELS).array, back.array)
    assert pydicom.dcmread(converted).SOPInstanceUID == pydicom.dcmread(seg).SOPInstanceUID


def test_two_torchrun_processes_write_the_pairs_of_one(cond_dir, maps_dir, paired_run, tmp_path, jobs):
    pytest.importorskip("torch.distributed.run")
    out = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29561", "-m",
               "prdit", "sample", str(cond_dir), "--labels", str(maps_dir), "--per-map", "2", "--guidance-scale",
               "2", "--seed", "4", "--out", str(out), "--save-x0", "--steps", STEPS, "--quiet", "--no-previews"]
    result = jobs.run(command, {"OMP_NUM_THREADS": "1"}, 240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "generated 4, skipped 0" in result.stdout and "(2 processes)" in result.stdout
    for name in (f"sample_0000{i}.nii.gz" for i in range(4)):
        for sub in ("", "labels/", "x0/"):
            assert np.array_equal(read_volume(out / f"{sub}{name}").array,
                                  read_volume(paired_run / f"{sub}{name}").array), sub + name
    ours, theirs = (json.loads((f / "manifest.json").read_text())["volumes"] for f in (out, paired_run))
    assert [e["label_map"] for e in ours] == [e["label_map"] for e in theirs]


def test_a_list_of_label_maps_resolves_against_the_list_and_names_a_missing_map(tmp_path):
    from prdit.generation.run import label_map_files

    (tmp_path / "maps").mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        (tmp_path / "maps" / name).write_bytes(b"")
    listed = tmp_path / "maps.txt"
    listed.write_text("# maps\nmaps/b.nii.gz\n\nmaps/a.nii.gz\n")
    assert label_map_files(listed) == [tmp_path / "maps" / "b.nii.gz", tmp_path / "maps" / "a.nii.gz"]
    listed.write_text("maps/a.nii.gz\nmaps/gone.nii.gz\n")
    with pytest.raises(DataError, match=r"maps\.txt: listed label map .*gone\.nii\.gz does not exist"):
        label_map_files(listed)
    listed.write_text("# nothing\n")
    with pytest.raises(DataError, match="names no label maps"):
        label_map_files(listed)
