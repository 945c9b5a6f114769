"""``prdit view``: one self-contained HTML page to scroll through CT volumes in a browser."""

from __future__ import annotations

from pathlib import Path

import typer

from prdit.files import output_file
from prdit.viewer.page import MAX_SIZE
from prdit.visualization import CT_WINDOWS


def register(app: typer.Typer) -> None:
    """Add the viewer command to the CLI."""

    @app.command("view")
    def view(
        paths: list[Path] = typer.Argument(..., help="Volume files (.nii.gz, .nii, .mha, .nrrd, .npz, .npy), "
                                           "folders of them (searched recursively) or list files (.txt, one "
                                           "path per line)."),
        out: Path = typer.Option(Path("view.html"), "--out", help="The HTML page to write.", callback=output_file),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing page."),
        max_size: int = typer.Option(MAX_SIZE, "--max-size", min=8, help="Voxels along any axis of a volume "
                                     "in the page: a larger volume is resampled (linear, same physical extent) so "
                                     "its largest axis has this many, and the page says so. The page holds "
                                     "2 bytes per voxel as base64: 128³ is 5.6 MB per volume."),
        grid: bool = typer.Option(False, "--grid", help="Open on a grid of axial views of every volume (for a "
                                  "folder of samples); click one to see it in three views."),
        window: str = typer.Option("lung", "--window", help=f"CT window the page opens with: "
                                   f"{', '.join(CT_WINDOWS)} (the page has the others and free level/width)."),
        labels: Path = typer.Option(None, "--labels", help="Label maps to overlay: the map of the one volume "
                                    "(a .nii.gz on its grid) or a folder of maps named like their volumes "
                                    "(<volume name>.nii.gz). Default: labels/<volume name>.nii.gz beside each "
                                    "volume, where there is one."),
        label_table: str = typer.Option(None, "--label-table", help="The label maps' values follow this table: a "
                                        "CSV or JSON of index -> name (prdit's or TotalSegmentator's names), or "
                                        "'totalsegmentator' (default: labels.json beside the maps)."),
    ) -> None:
        """Write one HTML page (no server, no network) with three linked orthogonal views per volume and its
        label map, where it has one, as an overlay."""
        from prdit.errors import ConfigError
        from prdit.viewer import label_map_files, volume_paths, write_viewer

        if window not in CT_WINDOWS:
            raise ConfigError(f"unknown CT window '{window}'; choose one of {', '.join(CT_WINDOWS)}")
        if out.exists() and not overwrite:
            raise ConfigError(f"{out} exists; choose another --out or pass --overwrite to replace it")
        files = volume_paths(paths)
        maps = label_map_files(files, labels)
        page = write_viewer(files, out, max_size=max_size, window=window, grid=grid,
                            title=f"prdit view: {len(files)} volume(s)", labels=maps, label_table=label_table)
        size_mb = page.stat().st_size / 1e6
        with_maps = sum(path is not None for path in maps)
        mapped = f", {with_maps} with a label map" if with_maps else ""
        typer.echo(f"wrote {page} ({len(files)} volume(s){mapped}, {size_mb:.1f} MB); open it in a browser")
