"""Training metrics as JSON lines, one CSV per split, and TensorBoard (rank 0 only)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: Path) -> list[dict]:
    """All rows of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLogger:
    """Appends rows ``{"step", "split", ...}``; on resume, drops rows past the resumed step so a
    run killed between checkpoints does not log the replayed steps twice."""

    def __init__(self, run_dir: Path, resume_step: int = 0, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        rows = [r for r in read_metrics(self.run_dir) if r["step"] <= resume_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        for split in {r["split"] for r in rows} | {p.stem for p in self.run_dir.glob("*.csv")}:
            self._rewrite_csv(split, [r for r in rows if r["split"] == split])
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=resume_step + 1)
            except ImportError:
                self.writer = None

    def _rewrite_csv(self, split: str, rows: list[dict]) -> None:
        path = self.run_dir / f"{split}.csv"
        if not rows:
            path.unlink(missing_ok=True)
            return
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def log(self, step: int, split: str, values: dict[str, float]) -> None:
        """Write one row to every sink."""
        row = {"step": step, "split": split, **{k: float(v) for k, v in values.items()}}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        csv_path = self.run_dir / f"{split}.csv"
        new = not csv_path.exists()
        with open(csv_path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row), extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.writer is not None:
            self.writer.close()
