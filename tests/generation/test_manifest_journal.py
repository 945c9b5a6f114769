"""The manifest of a generation folder at scale: every entry is journaled as it is recorded (a line, O(1) per
volume), manifest.json is rewritten a logarithmic number of times, and a killed run's journal is merged back."""

import json

from prdit.generation.run import FORMAT, JOURNAL_DIR, MANIFEST, SampleFolder

SETTINGS = {"format": FORMAT, "seed": 0, "steps": 10, "sampler": "pc", "schedule": "uniform", "output": "x0"}


def test_ten_thousand_entries_rewrite_the_manifest_a_few_hundred_times_and_a_killed_run_keeps_them(tmp_path,
                                                                                                    monkeypatch):
    writes = []
    save = SampleFolder.save_manifest
    monkeypatch.setattr(SampleFolder, "save_manifest", lambda self: (writes.append(len(self.entries)), save(self)))
    folder = SampleFolder(tmp_path, SETTINGS, overwrite=False)
    for i in range(10_000):  # each volume is recorded twice: before its file is written, and after
        folder.record(i, seed=i)
        folder.record(i, seed=i, generated_on={"device": "cpu"})
    # rewriting on every record would be 20,000 writes of up to 10,000 entries (quadratic in the volumes)
    assert len(writes) < 250 and sum(writes) < 30 * 10_000
    lines = (tmp_path / JOURNAL_DIR / "rank0.jsonl").read_text().splitlines()
    assert len(lines) == 20_000 and json.loads(lines[-1])["generated_on"] == {"device": "cpu"}
    on_disk = json.loads((tmp_path / MANIFEST).read_text())["volumes"]
    assert 9_000 <= len(on_disk) < 10_000  # behind the journal, as a killed run leaves it

    # another rank's journal, its last line cut by a crash
    with open(tmp_path / JOURNAL_DIR / "rank1.jsonl", "w") as f:
        f.write(json.dumps({"index": 10_000, "seed": 7, "file": None}) + "\n" + '{"index": 10_001, "se')
    reopened = SampleFolder(tmp_path, SETTINGS, overwrite=False)
    assert sorted(reopened.entries) == list(range(10_001))
    assert reopened.entries[9_999]["generated_on"] == {"device": "cpu"} and reopened.entries[10_000]["seed"] == 7
    assert len(json.loads((tmp_path / MANIFEST).read_text())["volumes"]) == 10_001  # merged, then the journal goes
    assert not (tmp_path / JOURNAL_DIR).exists()


def test_a_small_run_keeps_its_manifest_current_volume_by_volume(tmp_path):
    folder = SampleFolder(tmp_path, SETTINGS, overwrite=False)
    for i in range(8):
        folder.record(i, seed=i)
        assert len(json.loads((tmp_path / MANIFEST).read_text())["volumes"]) == i + 1
