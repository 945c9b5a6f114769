"""``prdit plot``: loss curves of a run (and of a run it built on) as a PNG."""

from __future__ import annotations

from pathlib import Path

from prdit.errors import PRDiTError
from prdit.training.metrics import read_metrics


def plot_runs(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Training loss (total, x₀ and ε terms) and validation x₀-MSE against step, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    plotted = False
    for run_dir in map(Path, run_dirs):
        rows = read_metrics(run_dir)
        train = [r for r in rows if r["split"] == "train"]
        val = [r for r in rows if r["split"] == "val"]
        if not train:
            continue
        plotted = True
        steps = [r["step"] for r in train]
        for key, style in (("loss", "-"), ("loss_x0", "--"), ("loss_eps", ":")):
            if key in train[0]:  # the terms a process logs: IaN's x₀ and ε, flow matching's one loss
                axes[0].plot(steps, [r[key] for r in train], style, label=f"{run_dir.name} {key}")
        if val:
            axes[1].plot([r["step"] for r in val], [r["x0_mse"] for r in val], "o-", label=run_dir.name)
    if not plotted:
        raise PRDiTError(f"no training metrics in {', '.join(map(str, run_dirs))} (metrics.jsonl)")
    axes[0].set_yscale("log")
    axes[0].set_title("training loss")
    axes[1].set_title("validation x₀-MSE (EMA)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
