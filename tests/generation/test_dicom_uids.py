"""DICOM UIDs of generated and reconstructed series: two different images never share one, the same run written
again gives the same ones."""

import pydicom
from typer.testing import CliRunner

from prdit.cli import app
from prdit.data.io import write_volume
from prdit.data.phantoms import generate_phantom


def invoke(*args):
    result = CliRunner().invoke(app, [*map(str, args), "--quiet", "--no-previews"])
    assert result.exit_code == 0, (result.output, result.exception)


def uids(series) -> list[str]:
    """Study, Series and Frame of Reference UID of a series folder, then every SOP Instance UID."""
    slices = [pydicom.dcmread(p) for p in sorted(series.glob("*.dcm"))]
    first = slices[0]
    return [first.StudyInstanceUID, first.SeriesInstanceUID, first.FrameOfReferenceUID,
            *(s.SOPInstanceUID for s in slices)]


def test_sample_runs_that_differ_in_one_setting_share_no_uid_and_a_run_written_again_keeps_them(model_dir,
                                                                                                 tmp_path):
    base = ["--num", 1, "--seed", 5, "--steps", 4, "--sampler", "euler", "--format", "dicom"]
    runs = {"base": base, "steps": [*base, "--steps", 3], "sampler": [*base, "--sampler", "heun"],
            "schedule": [*base, "--schedule", "lambda"]}
    found = {}
    for name, args in runs.items():
        invoke("sample", model_dir, "--out", tmp_path / name, *args)
        found[name] = uids(tmp_path / name / "dicom" / "sample_00000")
    every = [u for run in found.values() for u in run]
    assert len(every) == len(set(every)), "two sample runs that differ in one setting share a UID"

    invoke("sample", model_dir, "--out", tmp_path / "again", *base)
    assert uids(tmp_path / "again" / "dicom" / "sample_00000") == found["base"]
    invoke("sample", model_dir, "--out", tmp_path / "base", *base, "--overwrite")
    assert uids(tmp_path / "base" / "dicom" / "sample_00000") == found["base"]


def test_the_cases_of_a_reconstruction_share_no_uid_with_each_other_or_a_sample(model_dir, spacing, tmp_path):
    cases = tmp_path / "cases"
    for k in range(2):
        volume = generate_phantom(16, seed=30 + k)
        volume.spacing = spacing
        write_volume(cases / f"patient{k}.nii.gz", volume)
    reconstruct = ["reconstruct", model_dir, "--task", "sr", "--simulate-from", cases, "--steps", 4, "--seed", 5,
                   "--device", "cpu", "--format", "dicom"]
    invoke(*reconstruct, "--out", tmp_path / "out")
    invoke("sample", model_dir, "--out", tmp_path / "sample", "--num", 1, "--seed", 5, "--steps", 4,
           "--format", "dicom")
    found = [uids(tmp_path / "out" / f"patient{k}" / "dicom" / "reconstruction") for k in range(2)]
    found.append(uids(tmp_path / "sample" / "dicom" / "sample_00000"))
    every = [u for run in found for u in run]
    assert len(every) == len(set(every)), "two reconstructed cases, or a case and a sample, share a UID"

    invoke(*reconstruct, "--out", tmp_path / "again")
    assert uids(tmp_path / "again" / "patient1" / "dicom" / "reconstruction") == found[1]
