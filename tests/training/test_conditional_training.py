"""Training a label-conditioned PRDiT: (volume, label map) pairs, condition dropout, the conditioning learnt."""

import json

import numpy as np
import pytest
import torch

from prdit.data.dataset import VolumeDataset
from prdit.data.io import read_volume
from prdit.data.labels import PHANTOM_LABELS, label_path
from prdit.data.phantoms import write_phantoms
from prdit.errors import CheckpointError, DataError
from prdit.models.conditioning import drop_labels
from prdit.training.checkpoint import load_checkpoint
from prdit.training.config import load_config
from prdit.training.export import export_run
from prdit.training.setup import build_model
from prdit.training.trainer import train

K = len(PHANTOM_LABELS)


@pytest.fixture(scope="module")
def labelled_lists(tmp_path_factory):
    """Five 32³ phantoms with their label maps, split 4 / 1."""
    root = tmp_path_factory.mktemp("labelled")
    paths = write_phantoms(5, 32, root, seed=5, labels=True)
    (root / "train.txt").write_text("".join(f"{p.name}\n" for p in paths[:4]))
    (root / "val.txt").write_text(f"{paths[4].name}\n")
    return root / "train.txt", root / "val.txt"


def config(lists, tmp_path, name, model, *overrides):
    train_list, val_list = lists
    return load_config(None, [
        f"run.name={name}", f"run.root={tmp_path / 'runs'}", f"model.name={model}", "model.input_size=16",
        f"data.train={train_list}", f"data.val={val_list}", "data.num_workers=0", "data.cache=true", "data.flip=true",
        "train.global_batch=4", "train.micro_batch=2", "train.steps=4", "optim.lr=1e-3", "optim.ema_decay=0.5",
        "log.every=2", "log.checkpoint_every=4", "log.val_every=4", "log.preview_every=0", "log.tensorboard=false",
        *overrides])


def projections(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("label_conditioning.") and ".projection." in k}


def test_the_trainer_trains_a_conditional_model_from_scratch_and_from_an_unconditional_one(labelled_lists, tmp_path):
    settings = config(labelled_lists, tmp_path, "s1", "PRDiT-T/6/0", "model.conditioning=both",
                      "train.class_dropout=0.2")
    stage1 = train(settings, progress=False)
    trained = load_checkpoint(stage1.checkpoint)["model"]
    weights = projections(trained)
    assert weights and all(v.abs().max() > 0 for v in weights.values())  # moved away from the zero start
    torch.manual_seed(settings.train.seed)  # the trainer's start
    start = build_model(settings).state_dict()["label_conditioning.stage1.patches.embedding.weight"]
    moved = (trained["label_conditioning.stage1.patches.embedding.weight"] != start).any(dim=1)
    for name in ("background", "skeletal_muscle", "lung_right"):  # the maps reached the network, not only "no label"
        assert moved[PHANTOM_LABELS.index(name)], name

    stage2 = train(config(labelled_lists, tmp_path, "s2", "PRDiT-T/6/1", "model.conditioning=both",
                          f"train.init_from={stage1.run_dir}"), progress=False)
    final = load_checkpoint(stage2.checkpoint)["model"]
    stage1_ema = load_checkpoint(stage1.checkpoint)["ema"]
    denoiser = [k for k in final if k.startswith("local_denoiser.")]
    assert denoiser and all(torch.equal(final[k], stage1_ema[k]) for k in denoiser)  # frozen with stage 1
    # the local denoiser's label modulation keeps training with stage 2's loss
    assert not torch.equal(final["label_conditioning.stage1.projection.weight"],
                           stage1_ema["label_conditioning.stage1.projection.weight"])
    assert final["label_conditioning.stage2.projection.weight"].abs().max() > 0
    folder = export_run(stage2.run_dir, tmp_path / "model")
    recorded = json.loads((folder / "config.json").read_text())["model"]["conditioning"]
    assert recorded["stages"] == "both" and list(recorded["labels"]) == list(PHANTOM_LABELS)

    plain = train(config(labelled_lists, tmp_path, "u1", "PRDiT-T/6/0"), progress=False)
    both = train(config(labelled_lists, tmp_path, "b2", "PRDiT-T/6/1", "model.conditioning=both",
                        f"train.init_from={plain.run_dir}"), progress=False)  # both stages' labels from zero
    assert all(v.abs().max() > 0 for v in projections(load_checkpoint(both.checkpoint)["model"]).values())
    tuned = train(config(labelled_lists, tmp_path, "c2", "PRDiT-T/6/1", "model.conditioning=stage2",
                         f"train.init_from={plain.run_dir}"), progress=False)
    assert all(v.abs().max() > 0 for v in projections(load_checkpoint(tuned.checkpoint)["model"]).values())


def test_the_dataset_pairs_each_volume_with_its_label_map_at_the_training_size(labelled_lists, tmp_path):
    train_list, _ = labelled_lists
    dataset = VolumeDataset(train_list, size=16, labels=True)
    volume, labels = dataset[1]
    assert volume.shape == (1, 16, 16, 16) and labels.shape == (16, 16, 16) and labels.dtype == torch.int64
    stored = read_volume(label_path(dataset.paths[1])).array
    assert np.array_equal(labels.numpy(), stored[1::2, 1::2, 1::2])  # the centre voxel of each 2³ block
    assert torch.equal(VolumeDataset(train_list, size=16)[1], volume)  # the volume as unconditional training sees it

    label_path(dataset.paths[0]).rename(tmp_path / "elsewhere.nii.gz")
    try:
        with pytest.raises(DataError, match="no label map"):
            VolumeDataset(train_list, size=16, labels=True)[0]
    finally:
        (tmp_path / "elsewhere.nii.gz").rename(label_path(dataset.paths[0]))


def test_condition_dropout_replaces_whole_maps_and_single_classes_by_the_null_index():
    labels = torch.randint(0, K, (64, 4, 4, 4), generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    assert torch.equal(drop_labels(labels, K, 0.0, 0.0, generator), labels)
    assert (drop_labels(labels, K, 1.0, 0.0, generator) == K).all()
    dropped = drop_labels(labels, K, 0.1, 0.0, generator)
    whole = (dropped == K).flatten(1).all(1)
    assert 0 < whole.sum() < 20 and torch.equal(dropped[~whole], labels[~whole])
    some = drop_labels(labels, K, 0.0, 0.5, generator)
    for b in range(labels.shape[0]):  # a class goes everywhere in its map or nowhere
        for c in labels[b].unique():
            assert (some[b][labels[b] == c] == K).all() or (some[b][labels[b] == c] == c).all()
    assert (some == K).any() and (some != K).any()
