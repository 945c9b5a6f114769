"""The viewer page in a real browser: headless Chromium draws it, the test reads the canvases back.

Each check loads the page with a URL fragment that drives it (see static/viewer.js) and reads the JSON
summary the page writes into <pre id="prdit-state"> after every redraw (``--dump-dom``).
"""

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from prdit.data.io import Volume
from prdit.data.labels import LABELS, PHANTOM_LABELS
from prdit.data.phantoms import generate_phantom, generate_phantom_with_labels
from prdit.viewer import write_viewer
from prdit.viewer.page import read_page_data
from prdit.visualization import CT_WINDOWS

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium, chromium-browser or google-chrome on PATH "
                                "(apt-get install chromium) to draw the viewer page")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "viewer.png"


def ramp() -> np.ndarray:
    """[16, 12, 10] HU that differ by at least 3 gray levels (lung window) per step along any axis, so a view
    drawn with an axis flipped or swapped shows."""
    z, y, x = np.meshgrid(np.arange(16), np.arange(12), np.arange(10), indexing="ij")
    return (-1340.0 + 50 * z + 30 * y + 20 * x).astype(np.float32)


@pytest.fixture(scope="module")
def volumes():
    phantom = generate_phantom(32, seed=1)
    return [Volume(array=phantom.array, spacing=(1.0, 1.5, 2.5)), Volume(array=ramp(), spacing=(2.0, 2.0, 1.0))]


@pytest.fixture(scope="module")
def page(volumes, tmp_path_factory):
    return write_viewer(volumes, tmp_path_factory.mktemp("viewer") / "view.html", names=["phantom", "ramp"])


def run_browser(*args: str, profile: Path) -> subprocess.CompletedProcess:
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def summary(page: Path, fragment: str, tmp_path: Path) -> dict:
    """The page's state after applying ``fragment``, with what each canvas shows at its probe pixels."""
    done = run_browser("--virtual-time-budget=5000", "--dump-dom", f"{page.as_uri()}#{fragment}",
                       profile=tmp_path / "profile")
    found = re.search(r'<pre id="prdit-state"[^>]*>(.*?)</pre>', done.stdout, re.S)
    assert found and found.group(1), f"no state in the page (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def expected_gray(hu: float, level: float, width: float) -> float:
    return float(np.clip((hu - (level - width / 2)) / width, 0, 1) * 255)


def voxel_of(view: str, shape: tuple[int, int, int], slice_index: int, x: int, y: int) -> tuple[int, int, int]:
    """(z, y, x) drawn at canvas pixel (x, y): prdit.visualization.orthogonal_views' convention, superior up."""
    d = shape[0]
    return {"axial": (slice_index, y, x), "coronal": (d - 1 - y, slice_index, x),
            "sagittal": (d - 1 - y, x, slice_index)}[view]


def check_canvases(state: dict, volumes: list[Volume], level: float, width: float) -> int:
    """Every probed canvas pixel has the gray of its voxel's HU in the window; returns the number checked."""
    checked = 0
    for canvas in state["canvases"]:
        array = volumes[canvas["volume"]].array
        for probe in canvas["probes"]:
            z, y, x = voxel_of(canvas["view"], array.shape, canvas["slice"], probe["x"], probe["y"])
            assert abs(probe["gray"] - expected_gray(round(float(array[z, y, x])), level, width)) <= 1, (canvas, probe)
            checked += 1
    return checked


def test_views_draw_the_voxels_in_the_window_with_the_geometry(page, volumes, tmp_path):
    probes = "0:coronal:3:0;0:sagittal:31:2;1:coronal:0:0;1:coronal:9:15;1:sagittal:11:15;1:axial:9:11"
    state = summary(page, f"cursor=0,20,11,7&probe={probes}", tmp_path)
    assert state["mode"] == "views" and state["shown"] == [0, 1]
    assert state["window"] == {"name": "lung", "level": -600, "width": 1500}
    assert state["volumes"][0]["cursor"] == {"z": 20, "y": 11, "x": 7}
    # the ramp has another shape: it follows at the same normalised position
    assert state["volumes"][1]["cursor"] == {"z": 10, "y": 4, "x": 2}
    sizes = {(c["volume"], c["view"]): (c["width"], c["height"]) for c in state["canvases"]}
    assert sizes == {(0, "axial"): (32, 32), (0, "coronal"): (32, 32), (0, "sagittal"): (32, 32),
                     (1, "axial"): (10, 12), (1, "coronal"): (10, 16), (1, "sagittal"): (12, 16)}
    # displayed sizes follow the spacing: phantom x 1.0, y 1.5, z 2.5 mm; ramp x 2, y 2, z 1 mm
    css = {(c["volume"], c["view"]): [float(s.removesuffix("px")) for s in c["css"]] for c in state["canvases"]}
    for key, (w_mm, h_mm) in {(0, "axial"): (32, 48), (0, "coronal"): (32, 80), (0, "sagittal"): (48, 80),
                              (1, "axial"): (20, 24), (1, "coronal"): (20, 16), (1, "sagittal"): (24, 16)}.items():
        assert css[key][0] / css[key][1] == pytest.approx(w_mm / h_mm, rel=0.01), key
    assert check_canvases(state, volumes, *CT_WINDOWS["lung"]) == 6 * 10 + 6


def test_moving_a_slider_changes_the_slice_and_the_pixels(page, volumes, tmp_path):
    before = summary(page, "cursor=0,20,11,7", tmp_path)
    after = summary(page, "cursor=0,20,11,7&slider=0,axial,5", tmp_path)
    assert after["volumes"][0]["slices"] == {"axial": 5, "coronal": 11, "sagittal": 7}
    assert after["volumes"][1]["cursor"]["z"] == 2  # linked: (5 + 0.5) / 32 * 16 - 0.5 = 2.25
    axial = [next(c for c in s["canvases"] if c["volume"] == 0 and c["view"] == "axial") for s in (before, after)]
    assert axial[0]["slice"] == 20 and axial[1]["slice"] == 5
    assert [p["gray"] for p in axial[0]["probes"]] != [p["gray"] for p in axial[1]["probes"]]
    check_canvases(after, volumes, *CT_WINDOWS["lung"])


def test_a_click_moves_the_cursor_and_a_window_redraws(page, volumes, tmp_path):
    # a press on coronal pixel (5, 4) of the ramp: x 5, z = 15 - 4; its y (the coronal slice) stays
    state = summary(page, "cursor=1,3,6,1&window=-900,600&click=1,coronal,5,4", tmp_path)
    assert state["volumes"][1]["cursor"] == {"z": 11, "y": 6, "x": 5}
    assert state["window"] == {"name": "custom", "level": -900, "width": 600}
    check_canvases(state, volumes, -900, 600)
    state = summary(page, "window=bone", tmp_path)
    assert state["window"]["name"] == "bone"
    check_canvases(state, volumes, *CT_WINDOWS["bone"])


def test_grid_shows_every_volume_and_opens_one(page, volumes, tmp_path):
    state = summary(page, "grid=1", tmp_path)
    assert state["mode"] == "grid"
    assert [(c["volume"], c["view"], c["grid"]) for c in state["canvases"]] == [(0, "axial", True), (1, "axial", True)]
    check_canvases(state, volumes, *CT_WINDOWS["lung"])
    state = summary(page, "grid=1&open=1", tmp_path)
    assert state["mode"] == "views" and state["shown"] == [1]
    assert {c["volume"] for c in state["canvases"]} == {1}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """The phantom with its own label map and the ramp with a liver block (x >= 5) and a heart corner."""
    phantom, phantom_labels = generate_phantom_with_labels(32, seed=1)
    ramp_labels = np.zeros((16, 12, 10), np.uint8)
    ramp_labels[:, :, 5:] = LABELS["liver"]
    ramp_labels[:4, :4, :3] = LABELS["heart"]
    volumes = [Volume(array=phantom.array, spacing=(1.0, 1.5, 2.5)), Volume(array=ramp(), spacing=(2.0, 2.0, 1.0))]
    page = write_viewer(volumes, tmp_path_factory.mktemp("labelled") / "view.html", names=["phantom", "ramp"],
                        labels=[phantom_labels, ramp_labels])
    return page, volumes, [phantom_labels, ramp_labels]


def expected_rgb(gray: float, colour: str, opacity: float) -> np.ndarray:
    """A labelled voxel's colour: its gray mixed with its label's colour."""
    base = float(np.clip(gray, 0, 255))
    return np.array([base + (int(colour[k:k + 2], 16) - base) * opacity for k in (1, 3, 5)])


def check_overlay(state: dict, volumes: list[Volume], maps: list[np.ndarray], colours: list[str],
                  opacity: float | None) -> int:
    """Every probed pixel is its voxel's gray (``opacity`` None: overlay off, or a background voxel) or that gray
    mixed with its label's colour; returns the number of labelled pixels checked."""
    level, width = state["window"]["level"], state["window"]["width"]
    labelled = 0
    for canvas in state["canvases"]:
        array, labels = volumes[canvas["volume"]].array, maps[canvas["volume"]]
        for probe in canvas["probes"]:
            voxel = voxel_of(canvas["view"], array.shape, canvas["slice"], probe["x"], probe["y"])
            assert probe["label"] == labels[voxel], (canvas, probe)
            gray = expected_gray(round(float(array[voxel])), level, width)
            if opacity is None or labels[voxel] == LABELS["background"]:
                expected = np.full(3, gray)
            else:
                expected = expected_rgb(gray, colours[labels[voxel]], opacity)
                labelled += 1
            assert np.abs(np.array(probe["rgb"]) - expected).max() <= 1, (canvas, probe, expected)
    return labelled


def test_the_overlay_colours_labelled_voxels_with_a_legend_and_names_them(labelled, tmp_path):
    page, volumes, maps = labelled
    colours = read_page_data(page.read_text())["labels"]["colors"]
    state = summary(page, "cursor=0,16,16,9&probe=1:axial:7:2;1:axial:1:1;1:coronal:1:14", tmp_path)
    assert state["overlay"] == {"on": True, "opacity": 0.4}
    present = sorted(set(np.unique(maps[0]).tolist() + [LABELS["liver"], LABELS["heart"]]) - {LABELS["background"]})
    assert state["legend"] == [PHANTOM_LABELS[i] for i in present]
    assert check_overlay(state, volumes, maps, colours, 0.4) >= 20
    # the readout names the label of the voxel under the cursor beside its HU
    cursor_label = PHANTOM_LABELS[maps[0][16, 16, 9]]
    assert state["readout"].endswith(f"{round(float(volumes[0].array[16, 16, 9]))} HU  {cursor_label}")


def test_the_toggle_and_the_opacity_change_the_drawn_pixels(labelled, tmp_path):
    page, volumes, maps = labelled
    colours = read_page_data(page.read_text())["labels"]["colors"]
    probes = "1:axial:7:2;1:axial:1:1;1:coronal:1:14"

    def rgb(state):
        return [p["rgb"] for c in state["canvases"] for p in c["probes"]]

    shown = summary(page, f"cursor=0,16,16,9&probe={probes}", tmp_path)
    for fragment in ("overlay=0", "key=l"):  # the checkbox and the keyboard shortcut
        hidden = summary(page, f"cursor=0,16,16,9&probe={probes}&{fragment}", tmp_path)
        assert hidden["overlay"]["on"] is False and rgb(hidden) != rgb(shown)
        check_overlay(hidden, volumes, maps, colours, None)
        check_canvases(hidden, volumes, *CT_WINDOWS["lung"])
    opaque = summary(page, f"cursor=0,16,16,9&probe={probes}&opacity=100", tmp_path)
    assert opaque["overlay"] == {"on": True, "opacity": 1.0} and rgb(opaque) != rgb(shown)
    assert check_overlay(opaque, volumes, maps, colours, 1.0) >= 20
    # the grid's thumbnails carry the overlay too
    grid = summary(page, "grid=1&opacity=70", tmp_path)
    assert grid["mode"] == "grid" and check_overlay(grid, volumes, maps, colours, 0.7) >= 5


def test_a_page_without_label_maps_has_no_overlay(page, volumes, tmp_path):
    state = summary(page, "key=l", tmp_path)
    assert state["overlay"] is None and state["legend"] == []
    assert all(p["label"] is None for c in state["canvases"] for p in c["probes"])
    assert state["readout"].endswith(" HU")
    check_canvases(state, volumes, *CT_WINDOWS["lung"])


def test_screenshot(tmp_path):
    """A page of three phantoms in the lung window; PRDIT_UPDATE_SCREENSHOT=1 keeps it as docs/viewer.png."""
    from PIL import Image

    volumes = [generate_phantom(48, seed=seed) for seed in (0, 1, 2)]
    page = write_viewer(volumes, tmp_path / "view.html", names=[f"phantom, seed {seed}" for seed in (0, 1, 2)],
                        title="prdit view: three synthetic chest phantoms, 48³")
    png = tmp_path / "viewer.png"
    done = run_browser("--virtual-time-budget=3000", f"--screenshot={png}", "--window-size=1400,900",
                       f"{page.as_uri()}#cursor=0,26,24,17", profile=tmp_path / "profile")
    assert png.is_file(), done.stderr[-2000:]
    with Image.open(png) as image:
        assert image.size == (1400, 900)
        gray = np.asarray(image.convert("L"))
    assert gray.std() > 20 and len(np.unique(gray)) > 50  # drawn views, not a blank page
    if os.environ.get("PRDIT_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(png) as image:
            image.convert("P", palette=Image.ADAPTIVE, colors=128).save(SCREENSHOT, optimize=True)
