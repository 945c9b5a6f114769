"""The cone-beam projector: exact line integrals, analytic chords, orientation, adjoint, gradients, angles."""

from __future__ import annotations

import json
import math

import pytest
import torch

from prdit.data.normalization import Normalization
from prdit.errors import ConfigError
from prdit.inverse.projector import (
    ConeBeamGeometry,
    ConeBeamProjector,
    density_to_model,
    model_to_density,
    ray_endpoints,
    siddon_system_matrix,
    view_angles,
)


def unit_rays(projector: ConeBeamProjector) -> tuple[torch.Tensor, torch.Tensor]:
    """Source ``[V, rows, columns, 3]`` and unit direction of every detector pixel's ray (float64, x/y/z)."""
    sources, pixels = ray_endpoints(projector.geometry, projector.angles)
    direction = pixels - sources[:, None, None, :]
    return sources[:, None, None, :].expand_as(direction), direction / direction.norm(dim=-1, keepdim=True)


def box_chords(source: torch.Tensor, direction: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Analytic length of each ray inside the box ``[low, high]`` (mm), by the slab method; rays are unit, [..., 3]."""
    safe = torch.where(direction.abs() < 1e-15, torch.full_like(direction, 1e-15), direction)
    t1, t2 = (low - source) / safe, (high - source) / safe
    enter = torch.minimum(t1, t2).amax(dim=-1)
    leave = torch.maximum(t1, t2).amin(dim=-1)
    return (leave - enter).clamp_min(0.0)


@pytest.mark.parametrize("spacing, box", [
    ((2.0, 2.0, 2.0), ((8, 24), (8, 24), (8, 24))),  # a cube
    ((2.0, 2.5, 3.0), ((8, 24), (10, 20), (4, 28))),  # a box on an anisotropic grid: catches swapped axes
])
def test_line_integrals_of_a_voxel_aligned_box_equal_its_analytic_chords(spacing, box):
    # The box's faces lie on voxel planes, so the voxel image *is* the box: Siddon must be exact
    # up to float64 rounding (1e-9 mm).
    geometry = ConeBeamGeometry(detector_rows=24, detector_columns=24, pixel_mm=4.0)
    projector = ConeBeamProjector((32, 32, 32), spacing, angles_deg=[0.0, 30.0, 90.0, 200.0], geometry=geometry)
    density = torch.zeros(1, 1, 32, 32, 32, dtype=torch.float64)
    (z0, z1), (y0, y1), (x0, x1) = box
    density[..., z0:z1, y0:y1, x0:x1] = 1.0
    # box corners in mm, (x, y, z): voxel index i spans [(i - 16)·s, (i + 1 - 16)·s]
    low = torch.tensor([(x0 - 16) * spacing[0], (y0 - 16) * spacing[1], (z0 - 16) * spacing[2]], dtype=torch.float64)
    high = torch.tensor([(x1 - 16) * spacing[0], (y1 - 16) * spacing[1], (z1 - 16) * spacing[2]], dtype=torch.float64)
    source, direction = unit_rays(projector)
    expected = box_chords(source, direction, low, high)
    measured = projector.project(density)[0]
    assert (expected > 0).sum() > 300 and (expected == 0).sum() > 100  # rays through and beside the box
    torch.testing.assert_close(measured, expected, rtol=0, atol=1e-9)


def sphere_fractions(size: int, spacing: float, radius: float, supersample: int = 4) -> torch.Tensor:
    """Partial-volume fractions ``[D, H, W]`` of a centred ball, from ``supersample``³ points per voxel."""
    axis = ((torch.arange(size * supersample, dtype=torch.float64) + 0.5) / supersample - size / 2) * spacing
    in_plane = axis[:, None] ** 2 + axis[None, :] ** 2
    slabs = [(z * z + in_plane < radius * radius).double() for z in axis]  # one z at a time keeps memory small
    inside = torch.stack(slabs).reshape(size, supersample, size, supersample, size, supersample)
    return inside.mean(dim=(1, 3, 5))


def sphere_errors(size: int, spacing: float, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """|projection − analytic chord| of each ray at 30° through a voxelised ball, and each ray's distance to its centre."""
    geometry = ConeBeamGeometry(detector_rows=64, detector_columns=64, pixel_mm=2.5)
    projector = ConeBeamProjector((size,) * 3, spacing, angles_deg=[30.0], geometry=geometry)
    measured = projector.project(sphere_fractions(size, spacing, radius)[None, None])[0, 0]
    source, direction = unit_rays(projector)
    distance = torch.linalg.cross(source, direction, dim=-1).norm(dim=-1)[0]
    chord = 2.0 * (radius**2 - distance**2).clamp_min(0.0).sqrt()
    return (measured - chord).abs(), distance


def test_line_integrals_of_a_uniform_sphere_match_its_chords_up_to_the_voxelisation():
    # A ball is not a union of voxels: its voxel image (partial-volume fractions) smears the rim
    # over about one voxel, so a chord's integral can be off by up to about one voxel width at
    # its two ends. Measured at 2 mm voxels: 1.8 mm at most for rays 8 mm or more inside the rim.
    # Tolerances: at most one voxel width (2 mm) there, exactly 0 for rays that miss the ball's
    # voxels, and the mean error over all rays roughly halving when the voxels halve (measured:
    # 0.47 mm at 4 mm voxels, 0.20 mm at 2 mm), which is what a discretisation error does and a
    # geometry error (wrong magnification, offset, scale) would not.
    radius = 40.0
    coarse, _ = sphere_errors(32, 4.0, radius)
    fine, distance = sphere_errors(64, 2.0, radius)
    assert fine[distance < radius - 8.0].max() <= 2.0
    assert fine[distance > radius + 2.0 * math.sqrt(3.0)].abs().max() == 0.0
    assert fine.mean() <= 0.55 * coarse.mean()


def test_siddon_equals_a_fine_midpoint_sum_on_a_random_voxel_image():
    # Rays in arbitrary directions, one starting inside the volume and one missing it. The
    # midpoint sum with 100,000 samples per ray is off by at most (sample step × jump) per voxel
    # boundary crossed: < 0.01 here.
    torch.manual_seed(0)
    shape, spacing = (6, 5, 7), (1.5, 2.0, 1.0)  # (D, H, W) and (x, y, z) mm
    image = torch.rand(shape, dtype=torch.float64)
    sources = torch.tensor([[-30.0, 2.0, 1.0], [0.5, 0.3, -0.2], [20.0, 25.0, -9.0], [-30.0, 40.0, 0.0]],
                           dtype=torch.float64)
    ends = torch.tensor([[30.0, -3.0, 2.5], [9.0, -8.0, 4.0], [-14.0, -21.0, 7.0], [30.0, 40.0, 0.0]],
                        dtype=torch.float64)
    rays, voxels, lengths = siddon_system_matrix(shape, spacing, sources, ends)
    siddon = torch.zeros(len(sources), dtype=torch.float64).index_add(0, rays, image.flatten()[voxels] * lengths)

    samples = 100_000
    t = (torch.arange(samples, dtype=torch.float64) + 0.5) / samples
    points = sources[:, None, :] + t[None, :, None] * (ends - sources)[:, None, :]
    size_xyz = torch.tensor([shape[2], shape[1], shape[0]], dtype=torch.float64)
    cell = torch.floor(points / torch.tensor(spacing, dtype=torch.float64) + size_xyz / 2).long()
    inside = ((cell >= 0) & (cell < size_xyz.long())).all(dim=-1)
    cell = cell.clamp_min(0).minimum(size_xyz.long() - 1)
    values = image[cell[..., 2], cell[..., 1], cell[..., 0]] * inside
    midpoint = values.mean(dim=1) * (ends - sources).norm(dim=1)
    assert siddon[3] == 0.0 and siddon[:3].min() > 1.0
    torch.testing.assert_close(siddon, midpoint, rtol=0, atol=0.01)


def test_views_are_oriented_as_documented_and_magnified_by_distance():
    # A small block at x = 18, y = 10, z = 14 mm. At 0° the source is anterior (y = −700 mm): the
    # block is 710 mm from it, so it lands at (column, row) offsets (18, 14) · 820/710 mm from the
    # detector centre; at 90° the source is at x = +700 mm, the block 682 mm away, and columns run
    # along +y: offsets (10, 14) · 820/682 mm. Tolerance 0.25 pixel (the block's perspective
    # centroid differs from its centre's projection by far less).
    projector = ConeBeamProjector((32, 32, 32), 2.0)  # reference geometry, views 0° and 90°
    density = torch.zeros(1, 1, 32, 32, 32)
    density[..., 22:24, 20:22, 24:26] = 1.0  # voxel i's centre is at (i + 0.5 − 16) · 2 mm
    images = projector.project(density)[0]
    grid = torch.arange(128, dtype=torch.float32)
    for image, (column_mm, row_mm, distance) in zip(images, [(18.0, 14.0, 710.0), (10.0, 14.0, 682.0)]):
        total = image.sum()
        row = (image.sum(dim=1) * grid).sum() / total
        column = (image.sum(dim=0) * grid).sum() / total
        scale = 820.0 / distance / 2.0  # mm at the block -> pixels
        assert abs(column - (63.5 + column_mm * scale)) < 0.25
        assert abs(row - (63.5 + row_mm * scale)) < 0.25


def test_back_projection_is_the_adjoint_of_projection_and_the_autograd_gradient():
    torch.manual_seed(1)
    geometry = ConeBeamGeometry(detector_rows=16, detector_columns=18, pixel_mm=3.0)
    projector = ConeBeamProjector((12, 10, 14), (2.0, 1.5, 2.5), views=3, geometry=geometry)
    x = torch.rand(2, 1, 12, 10, 14, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, *projector.measurement_shape, dtype=torch.float64)
    forward = projector.project(x)
    lhs = (forward * y).sum()
    rhs = (x * projector.back_project(y)).sum()
    assert lhs > 0
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=0)
    (vjp,) = torch.autograd.grad(lhs, x)
    torch.testing.assert_close(vjp, projector.back_project(y), rtol=1e-12, atol=1e-12)


def test_projection_of_model_range_volumes_has_the_finite_difference_gradient():
    geometry = ConeBeamGeometry(detector_rows=5, detector_columns=6, pixel_mm=10.0)
    projector = ConeBeamProjector((4, 4, 5), 8.0, angles_deg=[0.0, 50.0], geometry=geometry)
    x = (torch.rand(1, 1, 4, 4, 5, dtype=torch.float64) * 2 - 1).requires_grad_()
    assert torch.autograd.gradcheck(projector, (x,))


def test_density_is_relative_to_water_and_maps_back():
    window = Normalization()
    x = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)  # HU -1000, 0, 1000
    torch.testing.assert_close(model_to_density(x, window), torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    shifted = Normalization(hu_min=-1200.0, hu_max=800.0)  # unclipped: HU -1200 is a density of -0.2
    torch.testing.assert_close(model_to_density(x, shifted), torch.tensor([-0.2, 0.8, 1.8], dtype=torch.float64))
    torch.testing.assert_close(density_to_model(model_to_density(x, shifted), shifted), x)
    # a projection of all-air volumes is 0, of all-water volumes the ray length through the volume
    projector = ConeBeamProjector((8, 8, 8), 4.0, geometry=ConeBeamGeometry(detector_rows=8, detector_columns=8))
    assert projector(-torch.ones(1, 1, 8, 8, 8)).abs().max() == 0.0
    centre_ray = projector(torch.zeros(1, 1, 8, 8, 8))[0, 0, 3:5, 3:5]
    torch.testing.assert_close(centre_ray, torch.full((2, 2), 32.0), rtol=1e-3, atol=0)  # ≈ 8 voxels × 4 mm


@pytest.mark.parametrize("views, expected", [
    (1, [0.0]),
    (2, [0.0, 90.0]),
    (3, [0.0, 90.0, 240.0]),  # {0, 90, 120, 240}: 90 and 120 are closest; 90 stays
    (4, [0.0, 90.0, 180.0, 270.0]),
    (5, [0.0, 90.0, 144.0, 216.0, 288.0]),  # 72 is 18° from 90
    (6, [0.0, 90.0, 120.0, 180.0, 240.0, 300.0]),  # 60 and 120 tie at 30° from 90: the smaller goes
    (8, [0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0]),
])
def test_view_angles_thin_the_uniform_set_around_the_standard_views(views, expected):
    assert view_angles(views) == expected


def test_many_views_keep_their_count_and_the_standard_views():
    for views in range(3, 40):
        angles = view_angles(views)
        assert len(angles) == len(set(angles)) == views and angles == sorted(angles)
        assert 0.0 in angles and 90.0 in angles


def test_bad_settings_and_inputs_raise_config_errors():
    with pytest.raises(ConfigError, match="positive integer"):
        view_angles(0)
    with pytest.raises(ConfigError, match="source-to-isocentre"):
        ConeBeamGeometry(source_to_isocentre_mm=900.0)
    with pytest.raises(ConfigError, match="spacing"):
        ConeBeamProjector((8, 8, 8), (1.0, 0.0, 1.0))
    projector = ConeBeamProjector((8, 8, 8), 4.0, geometry=ConeBeamGeometry(detector_rows=4, detector_columns=4))
    with pytest.raises(ConfigError, match="shape"):
        projector(torch.zeros(1, 1, 8, 8, 9))
    with pytest.raises(ConfigError, match=r"\[B, 1, D, H, W\]"):
        projector(torch.zeros(8, 8, 8))
    with pytest.raises(ConfigError, match="projections must have shape"):
        projector.back_project(torch.zeros(1, 3, 4, 4))


def test_describe_is_json_ready_and_complete():
    projector = ConeBeamProjector((8, 8, 8), (1.0, 2.0, 3.0), views=4)
    described = json.loads(json.dumps(projector.describe()))
    assert described["angles_deg"] == [0.0, 90.0, 180.0, 270.0]
    assert described["geometry"]["source_to_detector_mm"] == 820.0
    assert described["spacing_mm_xyz"] == [1.0, 2.0, 3.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_projection_on_cuda_equals_cpu():
    projector = ConeBeamProjector((16, 16, 16), 3.0)
    x = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    torch.testing.assert_close(projector(x.cuda()).cpu(), projector(x), rtol=1e-5, atol=1e-3)
