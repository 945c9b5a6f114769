"""Synthetic chest CT phantoms: the built-in data set.

Each phantom is a chest-CT-like volume in Hounsfield units with a real geometry (LPS world,
isotropic spacing, identity direction, so array ``[D, H, W]`` = (z inferior->superior,
y anterior->posterior, x right->left)). Anatomy is drawn from a seeded generator and
painted structure by structure, from the outside in:

    air, table, body (fat, muscle), thoracic/abdominal cavity, liver, lungs with parenchymal
    texture, heart, aorta, trachea and main bronchi, pulmonary vessel trees, nodules,
    spine, ribs, costal cartilage, sternum, then CT-like correlated noise.

Every structure is a signed distance (mm, negative inside) turned into a partial-volume
fraction, so the same anatomy renders consistently at any grid size or spacing. Large smooth
organs give the low-frequency content; vessels, ribs, nodules and noise the fine detail.

Each paint step also writes its structure's anatomical label (``prdit.data.labels``) into the
voxels it covers more than half, so a later structure overwrites an earlier one in the label
map as it does in the image. Labels come from the painting geometry alone, never from a random
draw, so a seed gives the same volume with or without its label map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from prdit.data.io import Volume, write_volume
from prdit.data.labels import LABELS, label_path, write_label_map, write_label_table
from prdit.errors import ConfigError

DEFAULT_FOV_MM = 380.0
"""Field of view of a phantom when no spacing is given: spacing = DEFAULT_FOV_MM / size."""

HU_AIR = -1000.0


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def phantom_seed(seed: int, index: int) -> int:
    """The seed of phantom number ``index`` in a set generated with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def generate_phantom(size: int = 64, seed: int = 0, spacing: float | None = None) -> Volume:
    """One chest CT phantom in HU: float32 ``[size, size, size]`` with its geometry."""
    return generate_phantom_with_labels(size, seed, spacing)[0]


def generate_phantom_with_labels(
    size: int = 64, seed: int = 0, spacing: float | None = None
) -> tuple[Volume, np.ndarray]:
    """A phantom and its uint8 anatomical label map ``[D, H, W]`` (indices of ``PHANTOM_LABELS``)."""
    if int(size) < 8:
        raise ConfigError(f"phantom size must be at least 8 voxels, got {size}")
    if spacing is not None and not spacing > 0:
        raise ConfigError(f"phantom spacing must be positive (mm), got {spacing}")
    size = int(size)
    spacing = float(spacing) if spacing is not None else DEFAULT_FOV_MM / size
    rng = np.random.default_rng(seed)
    canvas = _Canvas(size, spacing)
    anatomy = _draw_anatomy(rng)

    _paint_table(canvas, anatomy)
    _paint_body(canvas, anatomy)
    _paint_abdomen(canvas, anatomy)
    _paint_lungs(canvas, anatomy, rng)
    _paint_heart_and_aorta(canvas, anatomy)
    _paint_airways(canvas, anatomy)
    _paint_vessel_trees(canvas, anatomy, rng)
    _paint_nodules(canvas, anatomy, rng)
    _paint_spine(canvas, anatomy)
    _paint_ribs_and_sternum(canvas, anatomy)
    _add_noise(canvas, anatomy, rng)

    hu = np.clip(canvas.hu, -1024.0, 3071.0).astype(np.float32)
    half = (size - 1) / 2.0 * spacing
    volume = Volume(array=hu, spacing=(spacing,) * 3, origin=(-half, -half, -half), direction=np.eye(3))
    return volume, canvas.labels


def write_phantoms(
    num: int,
    size: int,
    out_dir: str | Path,
    seed: int = 0,
    spacing: float | None = None,
    workers: int = 1,
    labels: bool = False,
) -> list[Path]:
    """Write ``num`` phantoms as ``phantom_00000.nii.gz``...; phantom i uses ``phantom_seed(seed, i)``.

    ``labels`` also writes each label map as ``labels/phantom_00000.nii.gz`` and the name table
    as ``labels/labels.json``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if labels:
        write_label_table(label_path(out_dir / phantom_name(0)).parent)
    jobs = [(out_dir / phantom_name(i), size, phantom_seed(seed, i), spacing, labels) for i in range(int(num))]
    if workers <= 1 or len(jobs) <= 1:
        return [_write_one(job) for job in jobs]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_write_one, jobs, chunksize=max(1, len(jobs) // (8 * workers))))


def _write_one(job: tuple[Path, int, int, float | None, bool]) -> Path:
    path, size, seed, spacing, labels = job
    volume, label_map = generate_phantom_with_labels(size, seed, spacing)
    if labels:
        write_label_map(label_path(path), label_map, volume)
    return write_volume(path, volume)


def phantom_name(index: int) -> str:
    """File name of phantom number ``index``."""
    return f"phantom_{index:05d}.nii.gz"


# ---------------------------------------------------------------------------------------
# Canvas: the HU and label arrays, body-centred coordinates in mm, painting
# ---------------------------------------------------------------------------------------


class _Canvas:
    """HU and label arrays being painted, with voxel-centre coordinates in mm."""

    def __init__(self, size: int, spacing: float) -> None:
        self.size = size
        self.spacing = spacing
        axis = ((np.arange(size) - (size - 1) / 2.0) * spacing).astype(np.float32)
        self.axis = axis
        self.z = axis[:, None, None]
        self.y = axis[None, :, None]
        self.x = axis[None, None, :]
        self.hu = np.full((size, size, size), HU_AIR, dtype=np.float32)
        self.labels = np.zeros((size, size, size), dtype=np.uint8)

    def fraction(self, sd: np.ndarray) -> np.ndarray:
        """Partial-volume fraction of a structure from its signed distance (mm)."""
        return np.clip(0.5 - sd / self.spacing, 0.0, 1.0).astype(np.float32)

    def paint(self, weight: np.ndarray, value: float | np.ndarray, label: str | np.ndarray) -> None:
        """Blend ``value`` in with ``weight`` in [0, 1]; voxels more than half covered get ``label``.

        ``label`` is a name of ``LABELS`` or, for a structure with sides, an index array that
        broadcasts to the volume (see :meth:`sided`).
        """
        weight = np.broadcast_to(weight, self.hu.shape)
        self.hu += weight * (np.asarray(value, dtype=np.float32) - self.hu)
        covered = weight > 0.5
        if isinstance(label, str):
            self.labels[covered] = LABELS[label]
        else:
            self.labels[covered] = np.broadcast_to(label, self.hu.shape)[covered]

    def sided(self, right: str, left: str, on_right: np.ndarray | None = None) -> np.ndarray:
        """Label indices: ``right`` where ``on_right`` (default: x < 0, the patient's right), else ``left``."""
        on_right = self.x < 0 if on_right is None else on_right
        return np.where(on_right, LABELS[right], LABELS[left]).astype(np.uint8)

    def smooth_field(self, rng: np.random.Generator, sigma_mm: float) -> np.ndarray:
        """Gaussian random field with unit standard deviation and correlation length ``sigma_mm``."""
        field = ndimage.gaussian_filter(
            rng.standard_normal(self.hu.shape, dtype=np.float32), sigma=max(sigma_mm / self.spacing, 0.5)
        )
        return field / max(float(field.std()), 1e-6)


def _ellipse_sd(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance (mm) to the ellipse (u/a)^2 + (v/b)^2 = 1."""
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    grad = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2) / np.maximum(r, 1e-6)
    return (r - 1.0) / np.maximum(grad, 1.0 / np.maximum(a, b))


def _ellipsoid_sd(u: np.ndarray, v: np.ndarray, w: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipsoid with semi-axes a, b, c."""
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
    grad = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2 + (w / c**2) ** 2) / np.maximum(r, 1e-6)
    return (r - 1.0) / np.maximum(grad, 1.0 / np.maximum(np.maximum(a, b), c))


def _segment_distance(canvas: _Canvas, p0, p1) -> np.ndarray:
    """Distance (mm) of every voxel centre to the segment p0-p1 (points as (x, y, z))."""
    p0 = np.asarray(p0, dtype=np.float32)
    d = np.asarray(p1, dtype=np.float32) - p0
    dx, dy, dz = canvas.x - p0[0], canvas.y - p0[1], canvas.z - p0[2]
    t = np.clip((dx * d[0] + dy * d[1] + dz * d[2]) / max(float(d @ d), 1e-6), 0.0, 1.0)
    return np.sqrt((dx - t * d[0]) ** 2 + (dy - t * d[1]) ** 2 + (dz - t * d[2]) ** 2)


def _rotate(u: np.ndarray, v: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return c * u + s * v, -s * u + c * v


# ---------------------------------------------------------------------------------------
# Anatomy: every random draw of one patient, in mm (x to the left, y posterior, z superior)
# ---------------------------------------------------------------------------------------


def _draw_anatomy(rng: np.random.Generator) -> dict:
    u = rng.uniform
    a = {}
    a["body_a"] = u(135.0, 172.0)  # lateral semi-axis
    a["body_b"] = u(92.0, 122.0)  # antero-posterior semi-axis
    a["body_y"] = u(-12.0, 4.0)
    a["body_taper"] = u(0.0, 0.08)  # narrower towards the abdomen
    a["fat"] = u(6.0, 24.0)
    a["muscle"] = u(9.0, 16.0)
    a["fat_hu"] = u(-115.0, -85.0)
    a["muscle_hu"] = u(40.0, 55.0)
    a["table_gap"] = u(3.0, 15.0)
    a["diaphragm_z"] = u(-95.0, -45.0)
    a["apex_z"] = u(110.0, 165.0)
    a["right_dome_lift"] = u(8.0, 22.0)
    a["lung_hu"] = u(-875.0, -825.0)
    a["lung_gap"] = u(0.12, 0.2)  # half-width of the mediastinum, as a fraction of the cavity
    a["lung_xy"] = (u(0.9, 1.1), u(0.9, 1.1))
    a["heart"] = dict(
        x=u(12.0, 32.0), y=u(-45.0, -25.0), z_above_dome=u(40.0, 60.0),
        a=u(52.0, 68.0), b=u(42.0, 54.0), c=u(50.0, 62.0), angle=u(0.3, 0.7),
    )
    a["aorta_r"] = u(10.0, 14.0)
    a["trachea_r"] = u(7.0, 10.0)
    a["carina_above_dome"] = u(95.0, 125.0)
    a["spine_r"] = u(15.0, 20.0)
    a["spine_y"] = u(0.28, 0.38)  # vertebral body centre behind the body centre, fraction of body_b
    a["vertebra_period"] = u(24.0, 30.0)
    a["vertebra_phase"] = u(0.0, 30.0)
    a["kyphosis"] = u(2.0, 8.0)
    a["rib_period"] = u(22.0, 30.0)
    a["rib_phase"] = u(0.0, 30.0)
    a["rib_r"] = u(4.5, 6.5)
    a["rib_slope"] = u(25.0, 45.0)  # how far ribs descend from the back to the front (mm)
    a["noise_hu"] = u(10.0, 25.0)
    return a


def _cavity_axes(canvas: _Canvas, anatomy: dict) -> tuple[np.ndarray, np.ndarray]:
    """Semi-axes (a, b) of the inner thoracic wall for every slice, shape [D, 1, 1]."""
    a, b = _body_axes(canvas, anatomy)
    wall = anatomy["fat"] + anatomy["muscle"]
    return a - wall, b - wall


def _body_axes(canvas: _Canvas, anatomy: dict) -> tuple[np.ndarray, np.ndarray]:
    """Body semi-axes for every slice, shape [D, 1, 1]: slightly narrower towards the abdomen."""
    t = np.clip((anatomy["diaphragm_z"] - canvas.z) / 200.0, 0.0, 1.0)
    scale = 1.0 - anatomy["body_taper"] * t
    return anatomy["body_a"] * scale, anatomy["body_b"] * scale


# ---------------------------------------------------------------------------------------
# Structures, painted outside in
# ---------------------------------------------------------------------------------------


def _paint_table(canvas: _Canvas, anatomy: dict) -> None:
    top = anatomy["body_y"] + anatomy["body_b"] + anatomy["table_gap"] - 0.0006 * canvas.x**2
    thickness = 14.0
    slab = np.maximum(top - canvas.y, canvas.y - (top + thickness))
    slab = np.maximum(slab, np.abs(canvas.x) - 210.0)
    canvas.paint(canvas.fraction(slab), 80.0, "table")
    canvas.paint(canvas.fraction(slab + 3.0), -650.0, "table")  # foam core between carbon skins


def _paint_body(canvas: _Canvas, anatomy: dict) -> None:
    a, b = _body_axes(canvas, anatomy)
    y = canvas.y - anatomy["body_y"]
    canvas.paint(canvas.fraction(_ellipse_sd(canvas.x, y, a, b)), anatomy["fat_hu"], "subcutaneous_fat")
    fat = anatomy["fat"]
    canvas.paint(canvas.fraction(_ellipse_sd(canvas.x, y, a - fat, b - fat)), anatomy["muscle_hu"], "skeletal_muscle")
    ca, cb = _cavity_axes(canvas, anatomy)
    # Mediastinal and extra-pleural fat fills the cavity; organs are painted into it.
    canvas.paint(canvas.fraction(_ellipse_sd(canvas.x, y, ca, cb)), anatomy["fat_hu"] + 20.0, "torso_fat")
    # Paraspinal muscles on either side of the posterior spine.
    back = _ellipse_sd(canvas.x, canvas.y - _spine_y(anatomy) - anatomy["spine_r"] - 30.0, 55.0, 30.0)
    canvas.paint(canvas.fraction(back), anatomy["muscle_hu"], canvas.sided("autochthon_right", "autochthon_left"))


def _diaphragm_z(canvas_or_x, y, anatomy: dict) -> np.ndarray:
    """Height (mm) of the diaphragm under (x, y): two domes, the right one higher, deep recesses."""
    x = canvas_or_x
    dome = anatomy["diaphragm_z"] + anatomy["right_dome_lift"] * (x < 0)
    lateral = np.abs(x) / anatomy["body_a"]
    return dome - 90.0 * np.clip(lateral - 0.25, 0.0, None) ** 2 - 0.002 * (y - anatomy["body_y"] - 30.0) ** 2


def _paint_abdomen(canvas: _Canvas, anatomy: dict) -> None:
    ca, cb = _cavity_axes(canvas, anatomy)
    y = canvas.y - anatomy["body_y"]
    cavity = _ellipse_sd(canvas.x, y, ca, cb)
    below = canvas.z - _diaphragm_z(canvas.x, canvas.y, anatomy)
    canvas.paint(canvas.fraction(np.maximum(cavity, below)), 35.0, "abdomen")
    liver = np.maximum(np.maximum(cavity + 8.0, below + 4.0), canvas.x - 40.0)
    canvas.paint(canvas.fraction(liver), 62.0, "liver")
    # Gas in the stomach, under the left dome.
    stomach = _ellipsoid_sd(canvas.x - 0.45 * anatomy["body_a"], y + 0.2 * anatomy["body_b"],
                            canvas.z - anatomy["diaphragm_z"] + 30.0, 30.0, 25.0, 18.0)
    canvas.paint(canvas.fraction(np.maximum(stomach, below + 6.0)), HU_AIR, "stomach")


def _lung_sd(x, y, z, anatomy: dict, side: float) -> np.ndarray:
    """Signed distance (mm, approximate) to the right (side=-1) or left (side=+1) lung."""
    t = np.clip((anatomy["diaphragm_z"] - z) / 200.0, 0.0, 1.0)
    scale = 1.0 - anatomy["body_taper"] * t
    wall = anatomy["fat"] + anatomy["muscle"] + 4.0
    ca = anatomy["body_a"] * scale - wall
    cb = anatomy["body_b"] * scale - wall
    gap = anatomy["lung_gap"] * ca
    half_width = 0.5 * (ca - gap) * anatomy["lung_xy"][0 if side < 0 else 1]
    centre_x = side * (gap + half_width)
    yc = y - anatomy["body_y"]
    semi_y = 0.95 * cb * anatomy["lung_xy"][1 if side < 0 else 0]
    centre_z = anatomy["diaphragm_z"] + 30.0
    height = anatomy["apex_z"] - centre_z
    above = np.maximum(z - centre_z, 0.0)
    lung = _ellipsoid_sd(x - centre_x, yc - 0.03 * cb, above, half_width, semi_y, height)
    # The lung must also stay inside the cavity wall (ribs), which curves with the body.
    inside_wall = _ellipse_sd(x, yc, ca, cb)
    floor = _diaphragm_z(x, y, anatomy) - z
    return np.maximum(np.maximum(lung, inside_wall), floor)


def _paint_lungs(canvas: _Canvas, anatomy: dict, rng: np.random.Generator) -> None:
    right = _lung_sd(canvas.x, canvas.y, canvas.z, anatomy, -1.0)
    left = _lung_sd(canvas.x, canvas.y, canvas.z, anatomy, +1.0)
    sd = np.minimum(right, left)
    lung = canvas.fraction(sd)
    # Dependent (posterior) lung is denser; parenchyma has a fine random texture.
    gradient = 50.0 * np.clip((canvas.y - anatomy["body_y"]) / anatomy["body_b"] + 0.5, 0.0, 1.0) - 25.0
    texture = 18.0 * canvas.smooth_field(rng, 3.0)
    canvas.paint(lung, anatomy["lung_hu"] + gradient + texture, canvas.sided("lung_right", "lung_left", right <= left))
    canvas.lung_sd = sd


def _paint_heart_and_aorta(canvas: _Canvas, anatomy: dict) -> None:
    h = anatomy["heart"]
    centre_z = anatomy["diaphragm_z"] + h["z_above_dome"]
    u, v = _rotate(canvas.x - h["x"], canvas.y - anatomy["body_y"] - h["y"], h["angle"])
    heart = _ellipsoid_sd(u, v, canvas.z - centre_z, h["a"], h["b"], h["c"])
    heart = np.maximum(heart, _diaphragm_z(canvas.x, canvas.y, anatomy) + 4.0 - canvas.z)
    canvas.paint(canvas.fraction(heart - 5.0), anatomy["fat_hu"] + 10.0, "torso_fat")  # pericardial fat
    canvas.paint(canvas.fraction(heart), 42.0, "heart")

    # Ascending aorta, arch and descending aorta, left of the spine, as a chain of segments.
    r = anatomy["aorta_r"]
    body_y = anatomy["body_y"]
    spine_y = _spine_y(anatomy)
    top = anatomy["diaphragm_z"] + anatomy["carina_above_dome"] + 25.0
    points = [
        (h["x"] - 15.0, body_y + h["y"] + 10.0, centre_z + 10.0),
        (8.0, body_y - 25.0, top - 15.0),
        (15.0, body_y + 5.0, top),
        (22.0, spine_y - 25.0, top - 15.0),
        (22.0, spine_y - 22.0, anatomy["diaphragm_z"] - 60.0),
    ]
    aorta = np.minimum.reduce([_segment_distance(canvas, p, q) for p, q in zip(points[:-1], points[1:])])
    canvas.paint(canvas.fraction(aorta - r), 45.0, "aorta")


def _airway_tree(anatomy: dict) -> list[tuple[tuple, tuple, float, str]]:
    """Trachea and the two main bronchi as (start, end, radius, label)."""
    body_y = anatomy["body_y"]
    r = anatomy["trachea_r"]
    carina = (0.0, body_y + 15.0, anatomy["diaphragm_z"] + anatomy["carina_above_dome"])
    top = (0.0, body_y - 5.0, 400.0)
    right = (-45.0, body_y + 20.0, carina[2] - 25.0)
    left = (50.0, body_y + 22.0, carina[2] - 40.0)
    return [(top, carina, r, "trachea"), (carina, right, 0.8 * r, "bronchus_right"),
            (carina, left, 0.75 * r, "bronchus_left")]


def _paint_airways(canvas: _Canvas, anatomy: dict) -> None:
    for start, end, radius, label in _airway_tree(anatomy):
        d = _segment_distance(canvas, start, end)
        canvas.paint(canvas.fraction(d - radius - 2.0), 60.0, label)  # cartilage wall
        canvas.paint(canvas.fraction(d - radius), HU_AIR + 20.0, label)


def _grow_vessels(anatomy: dict, rng: np.random.Generator, side: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Random branching pulmonary vessel tree of one lung, from its hilum: (start, end, radius).

    Each branch grows towards a random target point of the lung ahead of it, so the tree
    spreads through the whole lung and stays inside it. One generation is grown at a time.
    """
    targets = _points_in_lung(anatomy, rng, side, 1500)
    hilum = np.array([side * 40.0, anatomy["body_y"] + 5.0, anatomy["diaphragm_z"] + anatomy["carina_above_dome"] - 35.0])
    # Trunks to the upper, middle and lower lung.
    headings = np.array([[side, 0.0, dz] for dz in (1.5, 0.5, -0.4, -1.2)])
    starts = np.repeat(hilum[None, :], len(headings), axis=0)
    radii = rng.uniform(4.5, 6.5, size=len(headings))
    segments = []
    for depth in range(8):
        # Each branch considers 64 random targets and takes the first one ahead of it.
        candidates = targets[rng.integers(0, len(targets), size=(len(starts), 64))]  # [branches, 64, 3]
        ahead = candidates - starts[:, None, :]
        distance = np.sqrt((ahead**2).sum(-1))
        cosine = (ahead * headings[:, None, :]).sum(-1) / (distance * np.sqrt((headings**2).sum(-1))[:, None] + 1e-6)
        allowed = (cosine > 0.6) & (distance > 10.0)
        choice = np.argmax(allowed, axis=1)
        alive = allowed.any(axis=1)
        if not alive.any():
            break
        starts, radii = starts[alive], radii[alive]
        direction = candidates[alive, choice[alive]] - starts
        reach = np.sqrt((direction**2).sum(-1, keepdims=True))
        direction /= reach
        length = np.minimum(reach, 55.0 * 0.78**depth) * rng.uniform(0.5, 0.8, size=reach.shape)
        ends = starts + direction * length
        segments += list(zip(starts, ends, radii))
        keep = radii >= 0.5
        if depth == 7 or not keep.any():
            break
        # Two children per branch, each bent away from the parent direction at random.
        direction, ends, radii = np.repeat(direction[keep], 2, 0), np.repeat(ends[keep], 2, 0), np.repeat(radii[keep], 2)
        bend = np.cross(direction, rng.standard_normal(direction.shape))
        bend /= np.sqrt((bend**2).sum(-1, keepdims=True)) + 1e-6
        headings = direction + rng.uniform(0.4, 0.9, size=(len(direction), 1)) * bend
        starts = ends
        radii = radii * rng.uniform(0.7, 0.82, size=radii.shape)
    return segments


def _points_in_lung(anatomy: dict, rng: np.random.Generator, side: float, count: int) -> np.ndarray:
    """``count`` random points (x, y, z) well inside one lung, by rejection sampling."""
    low = np.array([side * 10.0 if side > 0 else -200.0, anatomy["body_y"] - 150.0, anatomy["diaphragm_z"] - 80.0])
    high = np.array([200.0 if side > 0 else side * 10.0, anatomy["body_y"] + 150.0, anatomy["apex_z"]])
    points = rng.uniform(low, high, size=(8 * count, 3))
    inside = _lung_sd(points[:, 0], points[:, 1], points[:, 2], anatomy, side) < -4.0
    return points[inside][:count]


def _paint_vessel_trees(canvas: _Canvas, anatomy: dict, rng: np.random.Generator) -> None:
    segments = _grow_vessels(anatomy, rng, -1.0) + _grow_vessels(anatomy, rng, +1.0)
    # Rasterise centre lines into a radius map, then a distance transform gives every voxel
    # its distance to the nearest centre line and that line's radius.
    n, s = canvas.size, canvas.spacing
    radius_map = np.zeros((n, n, n), dtype=np.float32)
    starts = np.array([seg[0] for seg in segments])
    ends = np.array([seg[1] for seg in segments])
    radii = np.array([seg[2] for seg in segments], dtype=np.float32)
    steps = np.maximum(np.ceil(np.linalg.norm(ends - starts, axis=1) / (0.5 * s)).astype(np.int64), 1) + 1
    owner = np.repeat(np.arange(len(segments)), steps)
    t = (np.arange(owner.size) - np.repeat(np.cumsum(steps) - steps, steps)) / np.repeat(steps - 1, steps)
    points = starts[owner] + t[:, None] * (ends - starts)[owner]
    index = np.rint(points / s + (n - 1) / 2.0).astype(np.int64)  # (x, y, z) voxel indices
    keep = np.all((index >= 0) & (index < n), axis=1)
    np.maximum.at(radius_map, (index[keep, 2], index[keep, 1], index[keep, 0]), radii[owner[keep]])
    if not radius_map.any():
        return
    distance, nearest = ndimage.distance_transform_edt(radius_map == 0, sampling=s, return_indices=True)
    radius = radius_map[tuple(nearest)]
    # Vessels thinner than a voxel only partly fill it.
    contrast = np.minimum(1.0, (2.0 * radius / s) ** 2)
    weight = canvas.fraction(distance - radius) * contrast * canvas.fraction(canvas.lung_sd - 6.0)
    canvas.paint(weight, 40.0, "lung_vessels")


def _paint_nodules(canvas: _Canvas, anatomy: dict, rng: np.random.Generator) -> None:
    count = rng.poisson(1.5)
    for _ in range(count):
        side = rng.choice([-1.0, 1.0])
        for _attempt in range(20):
            centre = np.array([side * rng.uniform(30.0, 140.0), anatomy["body_y"] + rng.uniform(-80.0, 80.0),
                               rng.uniform(anatomy["diaphragm_z"], anatomy["apex_z"])])
            radius = rng.uniform(3.0, 15.0)
            if _lung_sd(centre[0], centre[1], centre[2], anatomy, side) < -radius:
                break
        else:
            continue
        axes = radius * rng.uniform(0.75, 1.25, size=3)
        sd = _ellipsoid_sd(canvas.x - centre[0], canvas.y - centre[1], canvas.z - centre[2], *axes)
        solid = rng.random() < 0.7
        canvas.paint(canvas.fraction(sd), rng.uniform(15.0, 60.0) if solid else rng.uniform(-600.0, -350.0), "lung_nodules")


def _spine_y(anatomy: dict) -> float:
    """Antero-posterior position (mm) of the vertebral body centres."""
    return anatomy["body_y"] + anatomy["spine_y"] * anatomy["body_b"]


def _paint_spine(canvas: _Canvas, anatomy: dict) -> None:
    r = anatomy["spine_r"]
    # Thoracic kyphosis: the spine bows backwards in the middle of the chest.
    centre_y = _spine_y(anatomy) + anatomy["kyphosis"] * (1.0 - (canvas.z / 200.0) ** 2)
    y = canvas.y - centre_y
    body = _ellipse_sd(canvas.x, y, 1.1 * r, r)
    canvas.paint(canvas.fraction(body), 750.0, "vertebrae")  # cortical shell
    canvas.paint(canvas.fraction(body + 2.0), 260.0, "vertebrae")  # cancellous core
    phase = np.mod(canvas.z - anatomy["vertebra_phase"], anatomy["vertebra_period"])
    disc = np.abs(phase - 0.5 * anatomy["vertebra_period"]) - 3.5
    canvas.paint(canvas.fraction(np.maximum(body + 0.5, disc)), 85.0, "intervertebral_discs")
    # Posterior arch around the spinal canal, and the spinous process towards the skin.
    canal_y = y - (r + 10.0)
    canal = np.sqrt(canvas.x**2 + canal_y**2)
    arch = np.abs(canal - 10.5) - 3.0
    arch = np.maximum(arch, np.abs(phase - 0.5 * anatomy["vertebra_period"]) - 0.38 * anatomy["vertebra_period"])
    canvas.paint(canvas.fraction(arch), 550.0, "vertebrae")
    canvas.paint(canvas.fraction(canal - 7.5), 15.0, "spinal_cord")
    process = np.maximum(np.abs(canvas.x) - 3.5, np.abs(canal_y - 20.0) - 9.0)
    process = np.maximum(process, np.abs(phase - 0.5 * anatomy["vertebra_period"]) - 0.3 * anatomy["vertebra_period"])
    canvas.paint(canvas.fraction(process), 550.0, "vertebrae")


def _paint_ribs_and_sternum(canvas: _Canvas, anatomy: dict) -> None:
    ca, cb = _cavity_axes(canvas, anatomy)
    y = canvas.y - anatomy["body_y"]
    rib_r = anatomy["rib_r"]
    # Ribs run along the chest wall just outside the cavity, descending from back to front.
    ring = _ellipse_sd(canvas.x, y, ca + rib_r + 1.0, cb + rib_r + 1.0)
    angle = np.arctan2(y / cb, canvas.x / ca)  # +pi/2 at the back, -pi/2 at the front
    descent = anatomy["rib_slope"] * 0.5 * (1.0 - np.sin(angle))
    period = anatomy["rib_period"]
    phase = np.mod(canvas.z + descent - anatomy["rib_phase"], period)
    dz = np.minimum(phase, period - phase)
    rib = np.sqrt(ring**2 + dz**2) - rib_r
    thorax = np.maximum(anatomy["diaphragm_z"] - 50.0 - canvas.z, canvas.z - anatomy["apex_z"] - 10.0)
    front = np.abs(angle + np.pi / 2.0)  # angle from the anterior midline
    bony = np.maximum(np.maximum(rib, thorax), 0.45 - front)
    canvas.paint(canvas.fraction(bony), 700.0, "ribs")
    canvas.paint(canvas.fraction(bony + 1.5), 300.0, "ribs")
    cartilage = np.maximum(np.maximum(rib, thorax), np.maximum(front - 0.45, 0.12 - front))
    canvas.paint(canvas.fraction(cartilage), 120.0, "costal_cartilages")
    sternum = np.maximum(np.abs(canvas.x) - 18.0, np.abs(y + cb + rib_r + 1.0) - 6.0)
    sternum = np.maximum(sternum, thorax)
    canvas.paint(canvas.fraction(sternum), 450.0, "sternum")


def _add_noise(canvas: _Canvas, anatomy: dict, rng: np.random.Generator) -> None:
    # Reconstruction noise is spatially correlated over about a millimetre.
    sigma = max(0.8 / canvas.spacing, 0.5)
    noise = ndimage.gaussian_filter(rng.standard_normal(canvas.hu.shape, dtype=np.float32), sigma)
    noise *= anatomy["noise_hu"] / max(float(noise.std()), 1e-6)
    canvas.hu += noise
