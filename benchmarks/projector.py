"""Cone-beam projector: Siddon (the project's) against trilinear ray marching, in time and accuracy.

For a ``--size``³ volume at ``--spacing`` mm and the reference geometry (source–detector 820 mm,
source–isocentre 700 mm, ``--detector``² pixels of 2 mm, views 0° and 90° by default):

* time to set up (Siddon: the sparse system matrix; ray marching: the sample grid), one forward
  projection, and its backward pass (the gradient a guided sampler needs), timed in alternating
  rounds so that machine load hits both alike; the memory the set-up keeps;
* line-integral error against analytic chord lengths, in mm: a voxel-aligned cube of half the
  edge (its voxel image is exact, so any error is the method's) and a ball of radius 0.3 × the
  edge (partial-volume voxel image, so both methods carry the voxelisation error too).

Ray marching samples the volume trilinearly (``grid_sample``) every ``--step`` voxels along each
ray across the volume's bounding sphere and sums samples × step.

    python benchmarks/projector.py                        # 128³ at 2 mm, two views
    python benchmarks/projector.py --views 8 --step 0.25
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from benchmarks.common import MiB, Timing, add_common_args, report, resolve_device, set_threads, timed

NAME = "projector"


class RayMarching:
    """Trilinear ray marching through a centred ``[D, H, W]`` grid: the alternative to Siddon, for comparison."""

    def __init__(self, shape: tuple[int, int, int], spacing: float, geometry, angles: list[float], step_voxels: float,
                 device: torch.device) -> None:
        from prdit.inverse.projector import ray_endpoints

        sources, pixels = ray_endpoints(geometry, angles)
        direction = pixels - sources[:, None, None, :]
        direction = direction / direction.norm(dim=-1, keepdim=True)
        half_extent = torch.tensor([shape[2], shape[1], shape[0]], dtype=torch.float64) * spacing / 2
        radius = float(half_extent.norm())
        self.step = step_voxels * spacing
        count = math.ceil(2 * radius / self.step)
        t = geometry.source_to_isocentre_mm - radius + (torch.arange(count, dtype=torch.float64) + 0.5) * self.step
        points = sources[:, None, None, None, :] + t[:, None] * direction[..., None, :]  # [V, rows, cols, K, 3]
        grid = (points / half_extent).float()  # align_corners=False: ±1 are the outer faces of the edge voxels
        self.views = len(angles)
        self.grid = grid.reshape(1, -1, *grid.shape[2:]).to(device)  # [1, V·rows, cols, K, 3]

    def __call__(self, density: torch.Tensor) -> torch.Tensor:
        """``[B, 1, D, H, W]`` -> ``[B, V, rows, cols]`` line integrals in mm."""
        grid = self.grid.expand(density.shape[0], *self.grid.shape[1:])
        samples = F.grid_sample(density, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        integrals = samples.sum(dim=-1) * self.step  # [B, 1, V·rows, cols]
        return integrals.reshape(density.shape[0], self.views, -1, integrals.shape[-1])


def analytic_chords(geometry, angles: list[float], shape: tuple[int, int, int], spacing: float
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Voxel images of a cube (half the edge, voxel-aligned) and a ball (radius 0.3·edge), and their chords per pixel."""
    from prdit.inverse.projector import ray_endpoints

    size = shape[0]
    sources, pixels = ray_endpoints(geometry, angles)
    direction = pixels - sources[:, None, None, :]
    direction = direction / direction.norm(dim=-1, keepdim=True)
    source = sources[:, None, None, :].expand_as(direction)
    half = size * spacing / 4
    safe = torch.where(direction.abs() < 1e-15, torch.full_like(direction, 1e-15), direction)
    t1, t2 = (-half - source) / safe, (half - source) / safe
    cube_chord = (torch.maximum(t1, t2).amin(-1) - torch.minimum(t1, t2).amax(-1)).clamp_min(0)
    cube = torch.zeros(shape, dtype=torch.float32)
    cube[size // 4: size - size // 4, size // 4: size - size // 4, size // 4: size - size // 4] = 1.0

    radius, supersample = 0.3 * size * spacing, 2
    axis = ((torch.arange(size * supersample, dtype=torch.float64) + 0.5) / supersample - size / 2) * spacing
    in_plane = axis[:, None] ** 2 + axis[None, :] ** 2
    ball = torch.stack([(z * z + in_plane < radius**2).float() for z in axis])
    ball = ball.reshape(size, supersample, size, supersample, size, supersample).mean(dim=(1, 3, 5))
    distance = torch.linalg.cross(source, direction, dim=-1).norm(dim=-1)
    ball_chord = 2 * (radius**2 - distance**2).clamp_min(0).sqrt()
    return cube, cube_chord.float(), ball, ball_chord.float()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="volume side in voxels")
    parser.add_argument("--spacing", type=float, default=2.0, help="isotropic voxel size in mm")
    parser.add_argument("--views", type=int, default=2, help="number of views (angles as the projector picks them)")
    parser.add_argument("--detector", type=int, default=128, help="detector side in pixels (2 mm each)")
    parser.add_argument("--step", type=float, default=0.5, help="ray-marching step in voxels")
    add_common_args(parser, repeats=5)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)

    from prdit.inverse.projector import ConeBeamGeometry, ConeBeamProjector, view_angles

    size, detector = (16, 16) if args.smoke else (args.size, args.detector)
    spacing = 16.0 if args.smoke else args.spacing
    shape = (size, size, size)
    geometry = ConeBeamGeometry(detector_rows=detector, detector_columns=detector)
    angles = view_angles(args.views)

    start = time.perf_counter()
    siddon = ConeBeamProjector(shape, spacing, angles_deg=angles, geometry=geometry)
    siddon_setup = time.perf_counter() - start
    # per non-zero: ray and voxel index (int64), length in float64 and its float32 copy for fp32 inputs
    siddon_bytes = siddon.lengths.numel() * (8 + 8 + 8 + 4)
    start = time.perf_counter()
    marching = RayMarching(shape, spacing, geometry, angles, args.step, device)
    marching_setup = time.perf_counter() - start
    marching_bytes = marching.grid.numel() * marching.grid.element_size()
    methods = {"Siddon": siddon.project, f"ray marching, step {args.step:g} voxel": marching}

    torch.manual_seed(0)
    density = torch.rand(1, 1, *shape, device=device)
    weights = torch.randn(1, len(angles), detector, detector, device=device)
    times = {name: {"forward": [], "backward": []} for name in methods}
    for round_index in range(args.warmup + args.repeats):
        for name, project in methods.items():
            x = density.clone().requires_grad_()
            held = {}
            forward = timed(lambda: held.update(y=project(x)), device)
            backward = timed(lambda: held["y"].backward(weights), device)
            if round_index >= args.warmup:
                times[name]["forward"].append(forward)
                times[name]["backward"].append(backward)

    cube, cube_chord, ball, ball_chord = analytic_chords(geometry, angles, shape, spacing)
    inside = ball_chord > 0.5 * ball_chord.max()  # rays well inside the ball's rim
    rows, results = [], []
    for (name, project), setup, kept in zip(methods.items(), (siddon_setup, marching_setup),
                                            (siddon_bytes, marching_bytes)):
        with torch.no_grad():
            cube_error = (project(cube[None, None].to(device)).cpu()[0] - cube_chord).abs()
            ball_error = (project(ball[None, None].to(device)).cpu()[0] - ball_chord).abs()
        forward, backward = Timing(times[name]["forward"]), Timing(times[name]["backward"])
        entry = {"method": name, "setup_s": setup, "kept_bytes": kept, "forward": forward.to_dict(),
                 "backward": backward.to_dict(), "cube_max_error_mm": float(cube_error.max()),
                 "cube_mean_error_mm": float(cube_error.mean()), "ball_max_error_mm": float(ball_error[inside].max()),
                 "ball_mean_error_mm": float(ball_error[inside].mean())}
        results.append(entry)
        rows.append([name, f"{setup:.2f}", f"{kept / MiB:.0f}", f"{forward.median * 1e3:.1f}",
                     f"{backward.median * 1e3:.1f}", f"{entry['cube_max_error_mm']:.2g} / {entry['cube_mean_error_mm']:.2g}",
                     f"{entry['ball_max_error_mm']:.2g} / {entry['ball_mean_error_mm']:.2g}"])
    columns = ["method", "set-up s", "kept MiB", "forward ms", "backward ms", "cube error max / mean mm",
               "ball error max / mean mm"]
    notes = [f"{size}³ volume at {spacing:g} mm → {len(angles)} views ({', '.join(f'{a:g}°' for a in angles)}) of "
             f"{detector}² pixels; fp32, batch 1; median of {args.repeats} alternating rounds after {args.warmup} warm-up",
             "errors: |line integral − analytic chord|; cube: all pixels; ball: rays whose chord exceeds half the diameter"]
    report(NAME, device, args, "cone-beam projector: Siddon against ray marching", notes, columns, rows, results)


if __name__ == "__main__":
    main()
