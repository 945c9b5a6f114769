import numpy as np
import pytest
import torch

from prdit.data.dataset import VolumeDataset, list_volumes, pool_factor, split_volumes
from prdit.data.io import Volume, read_volume, write_volume
from prdit.data.normalization import Normalization
from prdit.errors import DataError


def _write(path, array, spacing=(1.0, 1.0, 1.0)):
    return write_volume(path, Volume(array=np.asarray(array), spacing=spacing))


@pytest.fixture
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "data"
    for i in range(5):
        _write(folder / f"vol{i}.nii.gz", rng.uniform(-1000, 1000, (16, 16, 16)).astype(np.float32))
    _write(folder / "sub" / "vol5.npy", rng.uniform(-1000, 1000, (16, 16, 16)).astype(np.int16))
    _write(folder / "sub" / "vol6.npz", rng.uniform(-1000, 1000, (16, 16, 16)).astype(np.float32))
    (folder / "notes.txt").write_text("not a volume\n")
    return folder


def test_folder_listing_is_sorted_and_recursive(data_dir):
    names = [p.relative_to(data_dir).as_posix() for p in list_volumes(data_dir)]
    assert names == ["sub/vol5.npy", "sub/vol6.npz"] + [f"vol{i}.nii.gz" for i in range(5)]


def test_item_is_pooled_normalised_tensor(data_dir):
    ds = VolumeDataset(data_dir, size=8)
    assert len(ds) == 7
    x = ds[2]
    assert x.shape == (1, 8, 8, 8) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    # Normalise at the stored size, then average 2x2x2 blocks.
    hu = read_volume(ds.paths[2]).array.astype(np.float32)
    expected = Normalization().to_model(hu).reshape(8, 2, 8, 2, 8, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(x[0].numpy(), expected, atol=1e-6)
    # The window maps -1000 HU to -1 and +1000 HU to +1.
    np.testing.assert_allclose(Normalization().to_model(np.array([-1000.0, 0.0, 1000.0])), [-1.0, 0.0, 1.0])


def test_same_size_needs_no_pooling_and_quantile_by_name(data_dir):
    x = VolumeDataset(data_dir, size=16, normalization="quantile")[0]
    assert x.shape == (1, 16, 16, 16)
    # Upper clip at the volume's 0.999 quantile maps to +1; the lower end is fixed at -1000 HU.
    assert float(x.max()) == pytest.approx(1.0) and -1.0 <= float(x.min()) < -0.99


def test_list_file_relative_to_its_folder_or_root(data_dir, tmp_path):
    listing = data_dir / "train.txt"
    listing.write_text("# a comment\nvol3.nii.gz\n\nsub/vol5.npy\n")
    ds = VolumeDataset(listing, size=4)
    assert [p.name for p in ds.paths] == ["vol3.nii.gz", "vol5.npy"]
    elsewhere = tmp_path / "lists" / "val.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text("vol1.nii.gz\n")
    assert VolumeDataset(elsewhere, size=4, root=data_dir).paths == [data_dir / "vol1.nii.gz"]
    with pytest.raises(DataError, match="vol1.nii.gz"):
        VolumeDataset(elsewhere, size=4)


def test_spacing_is_that_of_the_pooled_training_tensors(tmp_path):
    write_volume(tmp_path / "a.nii.gz", Volume(np.zeros((16, 16, 16), np.int16), spacing=(0.7, 0.8, 1.25)))
    assert VolumeDataset(tmp_path, size=8).spacing == pytest.approx((1.4, 1.6, 2.5))
    assert VolumeDataset(tmp_path, size=16).spacing == pytest.approx((0.7, 0.8, 1.25))


def test_bad_files_raise_errors_naming_the_file(tmp_path):
    bad = tmp_path / "bad"
    _write(bad / "nan.npy", np.full((8, 8, 8), np.nan, np.float32))
    _write(bad / "odd.npy", np.zeros((12, 12, 12), np.float32))
    _write(bad / "flat.npy", np.zeros((8, 8, 4), np.float32))
    _write(bad / "mask.npy", np.zeros((8, 8, 8), bool))
    _write(bad / "twod.npy", np.zeros((8, 8), np.float32))
    ds = VolumeDataset(bad, size=8)
    errors = {}
    for i, path in enumerate(ds.paths):
        with pytest.raises(DataError) as info:
            ds[i]
        assert path.name in str(info.value)
        errors[path.name] = str(info.value)
    assert "NaN" in errors["nan.npy"]
    assert "not a cube" in errors["flat.npy"]
    assert "not numeric" in errors["mask.npy"]
    assert "3D" in errors["twod.npy"]
    with pytest.raises(DataError, match="odd.npy.*integer multiple"):
        VolumeDataset(bad / "odd.npy", size=8)[0]
    with pytest.raises(DataError, match="odd.npy"):
        VolumeDataset(bad / "odd.npy", size=16)[0]  # smaller than the training size
    assert pool_factor((256, 256, 256), 64) == 4


def test_missing_source_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        list_volumes(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no volume files"):
        list_volumes(tmp_path / "empty")


def test_split_is_deterministic_disjoint_and_readable_from_elsewhere(data_dir, tmp_path):
    train, val = split_volumes(data_dir, val_fraction=0.3, seed=42, out_dir=tmp_path / "splits")
    train2, val2 = split_volumes(data_dir, val_fraction=0.3, seed=42, out_dir=tmp_path / "splits2")
    assert train.read_text().splitlines()[1:] == train2.read_text().splitlines()[1:]
    assert val.read_text().splitlines()[1:] == val2.read_text().splitlines()[1:]
    t = VolumeDataset(train, size=8).paths
    v = VolumeDataset(val, size=8).paths
    assert len(v) == 2 and len(t) == 5
    assert set(t).isdisjoint(v) and {p.resolve() for p in t + v} == {p.resolve() for p in list_volumes(data_dir)}
    entries = [line for line in val.read_text().splitlines() if not line.startswith("#")]
    assert all(not entry.startswith("/") for entry in entries)
    fixed = split_volumes(data_dir, val_count=1, out_dir=tmp_path / "splits3")[1]
    assert len(VolumeDataset(fixed, size=8)) == 1


def test_split_command(data_dir):
    import typer
    from typer.testing import CliRunner

    from prdit.data.cli import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["split", "--data", str(data_dir), "--val-fraction", "0.2", "--seed", "42"])
    assert result.exit_code == 0, result.output
    assert (data_dir / "train.txt").is_file() and (data_dir / "val.txt").is_file()
    assert len(VolumeDataset(data_dir / "val.txt", size=8)) == 1
