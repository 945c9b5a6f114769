"""Volume sets (files, lists, units, shapes) and the feature cache."""

from __future__ import annotations

import numpy as np
import pytest

from prdit.data.io import Volume, write_volume
from prdit.data.normalization import Normalization
from prdit.errors import DataError
from prdit.evaluation.features import extract_features, feature_network
from prdit.evaluation.volumes import VolumeSet, list_volume_files


@pytest.fixture()
def hu_files(tmp_path, phantoms16):
    hu = Normalization().to_hu(phantoms16[:3])
    paths = [write_volume(tmp_path / "set" / "a.nii.gz", Volume(hu[0])),
             write_volume(tmp_path / "set" / "b.npy", Volume(hu[1])),
             write_volume(tmp_path / "set" / "c.npz", Volume(hu[2]))]
    return paths, hu


def test_directory_list_and_arrays_give_the_same_volumes(tmp_path, hu_files):
    paths, hu = hu_files
    (tmp_path / "set" / "notes.txt").write_text("not a volume")
    assert list_volume_files(tmp_path / "set") == sorted(paths)
    listing = tmp_path / "list.txt"
    listing.write_text("# real set\nset/b.npy\n\nset/a.nii.gz\n")
    assert list_volume_files(listing) == [paths[1], paths[0]]
    from_dir = VolumeSet(tmp_path / "set", units="hu")
    from_arrays = VolumeSet(list(hu), units="hu")
    for i in range(3):
        assert np.allclose(from_dir[i], Normalization().to_model(hu[i]), atol=1e-6)
        assert np.allclose(from_dir[i], from_arrays[i], atol=1e-6)
    assert from_dir.shape == (16, 16, 16) and from_dir.batch([0, 2]).shape == (2, 1, 16, 16, 16)


QUANTILE = Normalization(kind="quantile", quantile=0.999)


def test_generated_hu_files_of_a_quantile_model_read_back_to_the_sampled_arrays(tmp_path, phantoms16):
    # `prdit sample` maps the model range linearly to the nominal window and stores rounded int16 HU;
    # the per-volume quantile normalisation of training data is not its inverse.
    from prdit.generation.run import hu_file_array

    sampled = phantoms16[:3]  # a sample's brightest 0.1% need not reach 1, as the training volumes' do
    paths = [write_volume(tmp_path / f"sample_{i:05d}.nii.gz", Volume(hu_file_array(QUANTILE.to_hu(x), QUANTILE)))
             for i, x in enumerate(sampled)]
    generated = VolumeSet(paths, units="hu", normalization=QUANTILE, hu_mapping="sampling")
    half_hu = 1.0 / (QUANTILE.hu_max - QUANTILE.hu_min)  # int16 rounding, in model-range units
    for i in range(3):
        np.testing.assert_allclose(generated[i], sampled[i], rtol=0, atol=half_hu + 1e-6)
    assert generated.describe()["hu_mapping"] == "sampling"
    real = VolumeSet(paths, units="hu", normalization=QUANTILE)  # HU scans: normalised as training data are
    assert real.describe()["hu_mapping"] == "training"
    assert real.content_hash() != generated.content_hash()
    with pytest.raises(DataError, match="hu_mapping"):
        VolumeSet(paths, units="hu", normalization=QUANTILE, hu_mapping="inverse")


def test_units_are_checked(hu_files, phantoms16):
    with pytest.raises(DataError, match="if these are Hounsfield units"):
        VolumeSet(hu_files[0], units="model")[0]
    with pytest.raises(DataError, match="looks like the training range"):
        VolumeSet(list(phantoms16[:2]), units="hu")[0]


def test_one_shape_per_set_unless_resized(phantoms16, phantoms32):
    mixed = VolumeSet([phantoms16[0], phantoms32[0]])
    mixed[0]
    with pytest.raises(DataError, match="--resize"):
        mixed[1]
    resized = VolumeSet([phantoms16[0], phantoms32[0]], resize=(16, 16, 16))
    assert resized[1].shape == (16, 16, 16) and resized.shape == (16, 16, 16)


def test_content_hash_follows_content_not_names(tmp_path, phantoms16):
    a = write_volume(tmp_path / "a.npy", Volume(phantoms16[0]))
    b = write_volume(tmp_path / "b.npy", Volume(phantoms16[0]))
    assert VolumeSet([a]).content_hash() == VolumeSet([b]).content_hash()
    assert VolumeSet([a]).content_hash() != VolumeSet([a], units="hu").content_hash()
    write_volume(b, Volume(phantoms16[1]))
    assert VolumeSet([a]).content_hash() != VolumeSet([b]).content_hash()


def test_features_do_not_depend_on_batch_size_or_memory_budget(phantoms16):
    network = feature_network(seed=0)
    one = extract_features(VolumeSet(phantoms16[:3]), network, batch_size=1, progress=False)
    three = extract_features(VolumeSet(phantoms16[:3], memory_budget_gib=0), network, batch_size=3, progress=False)
    assert one.shape == (3, 2048)
    assert np.allclose(one, three, rtol=1e-4, atol=1e-5)


def test_features_are_cached_by_content_and_network(tmp_path, phantoms16):
    network = feature_network(seed=0)
    volumes = VolumeSet(phantoms16[:2])
    first = extract_features(volumes, network, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("features were recomputed although cached")

    network.model.forward = refuse
    again = extract_features(VolumeSet(phantoms16[:2].copy()), network, cache_dir=tmp_path, progress=False)
    assert np.array_equal(first, again)
    with pytest.raises(AssertionError, match="recomputed"):
        extract_features(VolumeSet(phantoms16[1:3]), network, cache_dir=tmp_path, progress=False)
    other_network = feature_network(seed=1)
    extract_features(volumes, other_network, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 2
