/* prdit view: three orthogonal views per volume with linked cursors, CT windows and an HU readout.
 *
 * Volumes arrive as base64 little-endian int16 HU [D, H, W] = (z, y, x) with their spacing (x, y, z) in mm, and
 * a volume with a label map its map as base64 uint8 label indices on the same grid; DATA.labels names and colours
 * the indices (null when no volume has a map). The overlay mixes each labelled voxel's gray with its label's
 * colour at the chosen opacity; the background label is never coloured.
 * Display convention (as prdit.visualization.orthogonal_views): axial rows y (anterior first), columns x;
 * coronal rows z and sagittal rows z with superior (high z) at the top, sagittal columns y. Canvases hold one
 * pixel per voxel; their displayed size is the physical extent, so anisotropic voxels look right.
 *
 * Test hooks: window.prditViewer (state, setSlice, setCursor, setWindow, setOverlay, pixel, hu, open, showGrid), the
 * JSON summary in <pre id="prdit-state"> rewritten after every redraw, and the URL fragment, applied in
 * order once the page is built: #window=lung | #window=L,W, cursor=V,Z,Y,X, slider=V,VIEW,INDEX (sets the
 * slider and dispatches an input event), click=V,VIEW,X,Y (a mouse press on canvas pixel X,Y), grid=1,
 * open=V (clicks thumbnail V), probe=V:VIEW:X:Y;... (extra canvas pixels reported in the summary),
 * overlay=0|1 (sets the overlay checkbox and dispatches a change event), opacity=PERCENT (sets the opacity slider
 * and dispatches an input event), key=K (a key press K on the page).
 */
(function () {
  "use strict";

  const DATA = JSON.parse(document.getElementById("prdit-data").textContent);
  const VIEWS = ["axial", "coronal", "sagittal"];
  const $ = (id) => document.getElementById(id);

  const LABELS = DATA.labels;  // {names, colors, present, none} or null
  const COLORS = LABELS ? LABELS.colors.map((hex) => [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16))) : [];
  const OVERLAY_OPACITY = 0.4;  // the overlay's opacity when the page opens

  function bytes(b64) {
    const text = atob(b64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }

  const volumes = DATA.volumes.map((entry, index) => {
    const [d, h, w] = entry.shape;
    const volume = {
      index, name: entry.name, d, h, w, spacing: entry.spacing, entry,
      hu: new Int16Array(bytes(entry.data).buffer),  // every platform a browser runs on is little-endian
      labels: entry.labels ? bytes(entry.labels) : null,
      cursor: { z: d >> 1, y: h >> 1, x: w >> 1 },
    };
    entry.data = entry.labels = null;
    return volume;
  });

  // Per view: the cursor axis its slider moves, the canvas size, the physical size (mm), the flat voxel index
  // of canvas pixel (c, r) on slice s, and the canvas pixel of a voxel.
  const GEOMETRY = {
    axial: {
      axis: "z", size: (v) => [v.w, v.h], mm: (v) => [v.w * v.spacing[0], v.h * v.spacing[1]],
      index: (v, s, c, r) => (s * v.h + r) * v.w + c,
      voxel: (v, s, c, r) => ({ z: s, y: r, x: c }), pixel: (v, p) => [p.x, p.y],
    },
    coronal: {
      axis: "y", size: (v) => [v.w, v.d], mm: (v) => [v.w * v.spacing[0], v.d * v.spacing[2]],
      index: (v, s, c, r) => ((v.d - 1 - r) * v.h + s) * v.w + c,
      voxel: (v, s, c, r) => ({ z: v.d - 1 - r, y: s, x: c }), pixel: (v, p) => [p.x, v.d - 1 - p.z],
    },
    sagittal: {
      axis: "x", size: (v) => [v.h, v.d], mm: (v) => [v.h * v.spacing[1], v.d * v.spacing[2]],
      index: (v, s, c, r) => ((v.d - 1 - r) * v.h + c) * v.w + s,
      voxel: (v, s, c, r) => ({ z: v.d - 1 - r, y: c, x: s }), pixel: (v, p) => [p.y, v.d - 1 - p.z],
    },
  };
  const LENGTH = { z: (v) => v.d, y: (v) => v.h, x: (v) => v.w };

  const state = {
    mode: DATA.grid ? "grid" : "views",
    shown: DATA.shown.slice(),
    linked: true,
    window: Object.assign({}, DATA.window),
    hover: null,
    overlay: { on: Boolean(LABELS), opacity: OVERLAY_OPACITY },
  };
  let canvases = [];  // {volume, view, canvas, ctx, image, slider, label, hline, vline}
  let extraProbes = [];

  const clamp = (k, n) => Math.min(n - 1, Math.max(0, k));
  const sameShape = (a, b) => a.d === b.d && a.h === b.h && a.w === b.w;

  function hu(i, z, y, x) {
    const v = volumes[i];
    return v.hu[(z * v.h + y) * v.w + x];
  }

  // The label index of a voxel, null for a volume without a label map.
  function label(i, z, y, x) {
    const v = volumes[i];
    return v.labels ? v.labels[(z * v.h + y) * v.w + x] : null;
  }

  // The same voxel in another volume: the same indices if the shapes agree, else the same normalised position.
  function mapCursor(src, dst, p) {
    if (sameShape(src, dst)) return { z: p.z, y: p.y, x: p.x };
    const f = (k, n, m) => clamp(Math.round(((k + 0.5) / n) * m - 0.5), m);
    return { z: f(p.z, src.d, dst.d), y: f(p.y, src.h, dst.h), x: f(p.x, src.w, dst.w) };
  }

  function setCursor(i, position) {
    const v = volumes[i];
    const p = Object.assign({}, v.cursor, position);
    v.cursor = { z: clamp(Math.round(p.z), v.d), y: clamp(Math.round(p.y), v.h), x: clamp(Math.round(p.x), v.w) };
    if (state.linked) for (const other of volumes) if (other !== v) other.cursor = mapCursor(v, other, v.cursor);
    redraw();
  }

  function setWindow(level, width, name) {
    const preset = Object.keys(DATA.windows).find((k) => DATA.windows[k][0] === level && DATA.windows[k][1] === width);
    state.window = { name: name || preset || "custom", level: Number(level), width: Math.max(1, Number(width)) };
    $("prdit-window").value = state.window.name;
    $("prdit-level").value = state.window.level;
    $("prdit-width").value = state.window.width;
    redraw();
  }

  function setOverlay(on, opacity) {
    if (!LABELS) return;
    state.overlay = { on: Boolean(on), opacity: opacity === undefined ? state.overlay.opacity
                                                                     : Math.min(1, Math.max(0, Number(opacity))) };
    $("prdit-overlay").checked = state.overlay.on;
    $("prdit-opacity").value = Math.round(state.overlay.opacity * 100);
    redraw();
  }

  // ---------------------------------------------------------------------------------------------------------
  // Drawing
  // ---------------------------------------------------------------------------------------------------------

  function drawCanvas(rec) {
    const v = volumes[rec.volume], g = GEOMETRY[rec.view];
    const s = v.cursor[g.axis];
    const [cw, ch] = g.size(v);
    const low = state.window.level - state.window.width / 2, scale = 255 / state.window.width;
    const labels = state.overlay.on ? v.labels : null, alpha = state.overlay.opacity;
    const px = rec.image.data;
    for (let r = 0, k = 0; r < ch; r++) {
      for (let c = 0; c < cw; c++, k += 4) {
        const index = g.index(v, s, c, r);
        const gray = (v.hu[index] - low) * scale;  // the clamped array clips and rounds
        if (labels === null || labels[index] === LABELS.none) {
          px[k] = px[k + 1] = px[k + 2] = gray;
        } else {
          const base = Math.min(255, Math.max(0, gray)), color = COLORS[labels[index]];
          px[k] = base + (color[0] - base) * alpha;
          px[k + 1] = base + (color[1] - base) * alpha;
          px[k + 2] = base + (color[2] - base) * alpha;
        }
        px[k + 3] = 255;
      }
    }
    rec.ctx.putImageData(rec.image, 0, 0);
    if (rec.hline) {
      const [c, r] = g.pixel(v, v.cursor);
      rec.hline.style.top = `${((r + 0.5) / ch) * 100}%`;
      rec.vline.style.left = `${((c + 0.5) / cw) * 100}%`;
    }
    if (rec.slider) {
      rec.slider.value = s;
      rec.label.lastChild.textContent = `${g.axis} ${s} / ${LENGTH[g.axis](v) - 1}`;
    }
  }

  function redraw() {
    for (const rec of canvases) drawCanvas(rec);
    if (state.mode === "grid") $("prdit-grid-slider").value = volumes[0].cursor.z;
    showReadout();
    writeSummary();
  }

  function showReadout() {
    const h = state.hover;
    const i = h ? h.volume : state.shown[0];
    const v = volumes[i], p = h ? h.voxel : v.cursor;
    const where = h ? "mouse" : "cursor";
    const id = label(i, p.z, p.y, p.x);
    $("prdit-readout").textContent =
      `${where}: ${v.name}  x ${p.x} y ${p.y} z ${p.z}  ${hu(i, p.z, p.y, p.x)} HU` +
      (id === null ? "" : `  ${LABELS.names[id]}`);
  }

  // ---------------------------------------------------------------------------------------------------------
  // Layout
  // ---------------------------------------------------------------------------------------------------------

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function newCanvas(i, view) {
    const v = volumes[i], g = GEOMETRY[view];
    const [cw, ch] = view === "grid" ? GEOMETRY.axial.size(v) : g.size(v);
    const canvas = el("canvas");
    canvas.width = cw;
    canvas.height = ch;
    canvas.id = `prdit-canvas-${i}-${view}`;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    return { volume: i, view, canvas, ctx, image: ctx.createImageData(cw, ch) };
  }

  function eventVoxel(rec, event) {
    const v = volumes[rec.volume], g = GEOMETRY[rec.view];
    const box = rec.canvas.getBoundingClientRect();
    const c = clamp(Math.floor(((event.clientX - box.left) / box.width) * rec.canvas.width), rec.canvas.width);
    const r = clamp(Math.floor(((event.clientY - box.top) / box.height) * rec.canvas.height), rec.canvas.height);
    return g.voxel(v, v.cursor[g.axis], c, r);
  }

  function makeView(i, view, scale) {
    const v = volumes[i], g = GEOMETRY[view];
    const rec = newCanvas(i, view);
    const [mw, mh] = g.mm(v);
    rec.canvas.style.width = `${Math.max(1, mw * scale)}px`;
    rec.canvas.style.height = `${Math.max(1, mh * scale)}px`;
    const wrap = el("div", "prdit-view");
    wrap.style.width = `${Math.max(100, mw * scale)}px`;
    rec.label = el("div", "prdit-label");
    rec.label.append(el("span", "", view), el("span", "", ""));
    const box = el("div", "prdit-box");
    rec.hline = el("div", "prdit-line h");
    rec.vline = el("div", "prdit-line v");
    box.append(rec.canvas, rec.hline, rec.vline);
    rec.slider = el("input");
    rec.slider.type = "range";
    rec.slider.min = 0;
    rec.slider.max = LENGTH[g.axis](v) - 1;
    rec.slider.id = `prdit-slider-${i}-${view}`;
    rec.slider.title = `${view} slice (${g.axis})`;
    rec.slider.addEventListener("input", () => setCursor(i, { [g.axis]: Number(rec.slider.value) }));
    wrap.append(rec.label, box, rec.slider);

    rec.canvas.addEventListener("mousedown", (e) => { e.preventDefault(); setCursor(i, eventVoxel(rec, e)); });
    rec.canvas.addEventListener("mousemove", (e) => {
      state.hover = { volume: i, voxel: eventVoxel(rec, e) };
      if (e.buttons & 1) setCursor(i, state.hover.voxel);
      else showReadout();
    });
    rec.canvas.addEventListener("mouseleave", () => { state.hover = null; showReadout(); });
    rec.canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      setCursor(i, { [g.axis]: v.cursor[g.axis] + (e.deltaY > 0 ? -1 : 1) });
    }, { passive: false });
    canvases.push(rec);
    return wrap;
  }

  function describe(v) {
    const e = v.entry;
    const shape = e.shape.join("×"), mm = e.spacing.map((s) => s.toFixed(2)).join("×");
    return e.downsampled ? `${e.original_shape.join("×")} → ${shape} voxels, ${mm} mm`
                         : `${shape} voxels, ${mm} mm`;
  }

  // CSS px per mm of volume i: its largest extent fills the space one column has (each volume its own scale,
  // so volumes of different fields of view are all readable; within a volume the aspect is physical).
  function viewScale(i, columns) {
    const extent = Math.max(...VIEWS.flatMap((view) => GEOMETRY[view].mm(volumes[i])));
    const byWidth = (window.innerWidth - 60) / columns - 20;
    const byHeight = (window.innerHeight - 170) / 3 - 40;
    return Math.max(128, Math.min(360, byWidth, byHeight)) / extent;
  }

  function buildViews() {
    const main = $("prdit-main");
    main.textContent = "";
    canvases = [];
    const shown = state.shown;
    const columns = el("div", "prdit-columns");
    columns.style.gridTemplateColumns = `repeat(${shown.length}, max-content)`;
    for (const i of shown) {
      const head = el("div", "prdit-head", volumes[i].name);
      head.title = volumes[i].name;
      head.append(el("small", "", describe(volumes[i])));
      columns.append(head);
    }
    for (const view of VIEWS) for (const i of shown) columns.append(makeView(i, view, viewScale(i, shown.length)));
    main.append(columns);
  }

  function buildGrid() {
    const main = $("prdit-main");
    main.textContent = "";
    canvases = [];
    const bar = el("div", "prdit-grid-bar");
    const slider = el("input");
    slider.type = "range";
    slider.id = "prdit-grid-slider";
    slider.min = 0;
    slider.max = volumes[0].d - 1;
    slider.addEventListener("input", () => {
      const linked = state.linked;
      state.linked = true;  // the grid's slider moves every thumbnail
      setCursor(0, { z: Number(slider.value) });
      state.linked = linked;
    });
    bar.append(el("span", "", "axial slice"), slider,
               el("span", "", "click a volume to open it in three views, shift-click to add it"));
    const grid = el("div", "prdit-grid");
    volumes.forEach((v, i) => {
      const scale = 128 / Math.max(...GEOMETRY.axial.mm(v));
      const rec = newCanvas(i, "grid");
      rec.view = "axial";
      rec.grid = true;
      const [mw, mh] = GEOMETRY.axial.mm(v);
      rec.canvas.style.width = `${Math.max(1, mw * scale)}px`;
      rec.canvas.style.height = `${Math.max(1, mh * scale)}px`;
      const thumb = el("div", "prdit-thumb");
      thumb.id = `prdit-thumb-${i}`;
      thumb.title = `${v.name}: ${describe(v)}`;
      thumb.append(rec.canvas, el("span", "", v.name));
      thumb.addEventListener("click", (e) => open(i, e.shiftKey));
      rec.canvas.addEventListener("mousemove", (e) => {
        state.hover = { volume: i, voxel: eventVoxel(rec, e) };
        showReadout();
      });
      rec.canvas.addEventListener("mouseleave", () => { state.hover = null; showReadout(); });
      canvases.push(rec);
      grid.append(thumb);
    });
    main.append(bar, grid);
  }

  function buildVolumeList() {
    const nav = $("prdit-volumes");
    nav.textContent = "";
    volumes.forEach((v, i) => {
      const label = el("label");
      const box = el("input");
      box.type = "checkbox";
      box.checked = state.shown.includes(i);
      box.addEventListener("change", () => {
        const shown = box.checked ? [...state.shown, i].sort((a, b) => a - b) : state.shown.filter((k) => k !== i);
        if (shown.length === 0) { box.checked = true; return; }
        state.shown = shown;
        if (state.mode === "views") build();
      });
      label.append(box, ` ${v.name}`);
      nav.append(label);
    });
  }

  function build() {
    state.hover = null;
    if (state.mode === "grid") buildGrid();
    else buildViews();
    $("prdit-mode").textContent = state.mode === "grid" ? "three views" : "grid";
    buildVolumeList();
    redraw();
  }

  function open(i, add) {
    if (add && state.mode === "views") return;
    state.shown = add ? [...new Set([...state.shown, i])].sort((a, b) => a - b) : [i];
    if (!add) { state.mode = "views"; build(); } else buildVolumeList();
  }

  function showGrid() {
    state.mode = "grid";
    build();
  }

  // ---------------------------------------------------------------------------------------------------------
  // State for people and for tests
  // ---------------------------------------------------------------------------------------------------------

  function snapshot() {
    return {
      mode: state.mode,
      shown: state.shown.slice(),
      linked: state.linked,
      window: Object.assign({}, state.window),
      overlay: LABELS ? Object.assign({}, state.overlay) : null,
      legend: Array.from(document.querySelectorAll("#prdit-legend .prdit-legend-entry"), (e) => e.dataset.label),
      readout: $("prdit-readout").textContent,
      volumes: volumes.map((v) => ({
        name: v.name, shape: [v.d, v.h, v.w], spacing: v.spacing, cursor: Object.assign({}, v.cursor),
        labels: Boolean(v.labels),
        slices: { axial: v.cursor.z, coronal: v.cursor.y, sagittal: v.cursor.x },
      })),
    };
  }

  function pixel(i, view, x, y) {
    const rec = canvases.find((r) => r.volume === i && r.view === view && !r.grid)
             || canvases.find((r) => r.volume === i && r.view === view);
    if (!rec) return null;
    return Array.from(rec.ctx.getImageData(x, y, 1, 1).data);
  }

  function probes(rec) {
    const [cw, ch] = [rec.canvas.width, rec.canvas.height];
    const v = volumes[rec.volume], g = GEOMETRY[rec.view];
    const points = [g.pixel(v, v.cursor)];
    for (const fy of [0.25, 0.5, 0.75]) {
      for (const fx of [0.25, 0.5, 0.75]) points.push([Math.floor(fx * cw), Math.floor(fy * ch)]);
    }
    for (const p of extraProbes) if (p.volume === rec.volume && p.view === rec.view) points.push([p.x, p.y]);
    return points.map(([x, y]) => {
      const voxel = g.voxel(v, v.cursor[g.axis], x, y);
      const rgb = Array.from(rec.ctx.getImageData(x, y, 1, 1).data.slice(0, 3));
      return { x, y, gray: rgb[0], rgb, voxel, hu: hu(rec.volume, voxel.z, voxel.y, voxel.x),
               label: label(rec.volume, voxel.z, voxel.y, voxel.x) };
    });
  }

  function writeSummary() {
    const summary = snapshot();
    summary.canvases = canvases.map((rec) => ({
      volume: rec.volume, view: rec.view, grid: Boolean(rec.grid), width: rec.canvas.width,
      height: rec.canvas.height, css: [rec.canvas.style.width, rec.canvas.style.height],
      slice: volumes[rec.volume].cursor[GEOMETRY[rec.view].axis], probes: probes(rec),
    }));
    $("prdit-state").textContent = JSON.stringify(summary);
  }

  window.prditViewer = {
    state: snapshot,
    setSlice(i, view, index) {
      const slider = $(`prdit-slider-${i}-${view}`);
      slider.value = index;
      slider.dispatchEvent(new Event("input", { bubbles: true }));
    },
    setCursor(i, z, y, x) { setCursor(i, { z, y, x }); },
    setWindow(levelOrName, width) {
      if (typeof levelOrName === "string") setWindow(...DATA.windows[levelOrName], levelOrName);
      else setWindow(levelOrName, width);
    },
    setOverlay,
    pixel,
    hu,
    label,
    open,
    showGrid,
  };

  function applyFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    for (const [key, value] of params) {
      const parts = value.split(",");
      if (key === "window") {
        if (DATA.windows[value]) window.prditViewer.setWindow(value);
        else setWindow(Number(parts[0]), Number(parts[1]));
      } else if (key === "cursor") {
        const [i, z, y, x] = parts.map(Number);
        setCursor(i, { z, y, x });
      } else if (key === "slider") {
        window.prditViewer.setSlice(Number(parts[0]), parts[1], Number(parts[2]));
      } else if (key === "click") {
        const [i, view, x, y] = parts;
        const canvas = $(`prdit-canvas-${Number(i)}-${view}`), box = canvas.getBoundingClientRect();
        const clientX = box.left + ((Number(x) + 0.5) / canvas.width) * box.width;
        const clientY = box.top + ((Number(y) + 0.5) / canvas.height) * box.height;
        canvas.dispatchEvent(new MouseEvent("mousedown", { bubbles: true, cancelable: true, clientX, clientY }));
      } else if (key === "overlay" || key === "opacity") {
        const control = $(key === "overlay" ? "prdit-overlay" : "prdit-opacity");
        if (key === "overlay") control.checked = value === "1";
        else control.value = value;
        control.dispatchEvent(new Event(key === "overlay" ? "change" : "input", { bubbles: true }));
      } else if (key === "key") {
        document.dispatchEvent(new KeyboardEvent("keydown", { key: value, bubbles: true }));
      } else if (key === "grid") {
        showGrid();
      } else if (key === "open") {
        $(`prdit-thumb-${Number(value)}`).dispatchEvent(new MouseEvent("click", { bubbles: true }));
      } else if (key === "probe") {
        extraProbes = value.split(";").map((p) => {
          const [i, view, x, y] = p.split(":");
          return { volume: Number(i), view, x: Number(x), y: Number(y) };
        });
        redraw();
      }
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Controls
  // ---------------------------------------------------------------------------------------------------------

  document.title = DATA.title;
  $("prdit-title").textContent = DATA.title;
  const select = $("prdit-window");
  for (const name of [...Object.keys(DATA.windows), "custom"]) {
    const option = el("option", "", name === "custom" ? "custom" : `${name} (${DATA.windows[name].join(" / ")})`);
    option.value = name;
    select.append(option);
  }
  select.addEventListener("change", () => {
    if (DATA.windows[select.value]) setWindow(...DATA.windows[select.value], select.value);
  });
  for (const id of ["prdit-level", "prdit-width"]) {
    $(id).addEventListener("input", () => {
      if ($("prdit-level").value === "" || $("prdit-width").value === "") return;  // still being typed
      const level = Number($("prdit-level").value), width = Number($("prdit-width").value);
      if (Number.isFinite(level) && Number.isFinite(width) && width > 0) setWindow(level, width);
    });
  }
  $("prdit-link").addEventListener("change", (e) => { state.linked = e.target.checked; });
  if (LABELS) {
    $("prdit-overlay-controls").hidden = false;
    $("prdit-overlay").addEventListener("change", (e) => setOverlay(e.target.checked));
    $("prdit-opacity").addEventListener("input", (e) => setOverlay(state.overlay.on, Number(e.target.value) / 100));
    const legend = $("prdit-legend");
    for (const id of LABELS.present) {
      const entry = el("span", "prdit-legend-entry");
      entry.dataset.label = LABELS.names[id];
      const swatch = el("span", "prdit-swatch");
      swatch.style.background = LABELS.colors[id];
      entry.append(swatch, LABELS.names[id]);
      legend.append(entry);
    }
    legend.hidden = false;
    document.addEventListener("keydown", (e) => {
      const typing = e.target instanceof HTMLElement && e.target.matches("input[type=number], select");
      if ((e.key === "l" || e.key === "L") && !typing && !e.ctrlKey && !e.metaKey && !e.altKey) {
        setOverlay(!state.overlay.on);
      }
    });
  }
  $("prdit-mode").addEventListener("click", () => { state.mode = state.mode === "grid" ? "views" : "grid"; build(); });
  let resizeTimer = null;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(build, 200); });

  build();
  setOverlay(state.overlay.on, state.overlay.opacity);
  setWindow(state.window.level, state.window.width, state.window.name || undefined);
  applyFragment();
})();
