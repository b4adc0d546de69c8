// The map of a library (photosearch map, docs/map.md): one canvas, every photo a point or a
// thumbnail, clusters outlined and named. Shared by the offline HTML file `photosearch map
// --output map.html` writes (data and a thumbnail atlas inlined) and the gallery's Map view
// (data from /api/map, thumbnails from /api/photos/ID/thumbnail). No framework, no CDN.
"use strict";

(function () {
  const PALETTE = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
    "#17becf", "#bcbd22", "#7f7f7f", "#ff7f0e",
  ];
  const GRID = 128; // hover lookup: the world is cut into GRID × GRID cells
  const MIN_ZOOM = 0.5;
  const MAX_ZOOM = 400;
  const THUMBS_AT_PX = 14; // points at least this big on screen are drawn as thumbnails
  const MAX_THUMBS_A_FRAME = 2000; // past this, dots: a frame stays under ~40 ms in software rendering

  function colour(cluster) {
    return PALETTE[cluster % PALETTE.length];
  }

  function inside(point, polygon) {
    let hit = false;
    for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
      const [xi, yi] = polygon[i];
      const [xj, yj] = polygon[j];
      if (yi > point[1] !== yj > point[1] && point[0] < ((xj - xi) * (point[1] - yi)) / (yj - yi) + xi) hit = !hit;
    }
    return hit;
  }

  // data: {x, y, cluster, paths, ids?, clusters: [{cluster, size, label, label_score, x, y, outline}],
  //        atlas?: {tile, columns, per_sheet, sheets, index}}
  // options: {onPoint(i), onCluster(cluster), thumbnailUrl(i)?, status(text)?}
  function create(container, data, options = {}) {
    const canvas = document.createElement("canvas");
    canvas.className = "photo-map-canvas";
    canvas.tabIndex = 0;
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `A map of ${data.x.length} photos in ${data.clusters.length} clusters`);
    const tip = document.createElement("div");
    tip.className = "photo-map-tip";
    tip.hidden = true;
    container.append(canvas, tip);
    const context = canvas.getContext("2d");
    const n = data.x.length;
    const view = { zoom: 1, cx: 0, cy: 0 }; // world point at the canvas centre
    let width = 0;
    let height = 0;
    let pending = false;
    let hovered = -1;
    let selectedCluster = null;
    const sheets = (data.atlas ? data.atlas.sheets : []).map((src) => {
      const image = new Image();
      image.onload = () => redraw();
      image.src = src;
      return image;
    });
    const loaded = new Map(); // gallery mode: point -> Image
    const labelAt = new Map(); // cluster -> where its label was drawn (screen)
    const grid = buildGrid();

    function buildGrid() {
      const cells = new Map();
      for (let i = 0; i < n; i++) {
        const key = cellOf(data.x[i], data.y[i]);
        if (!cells.has(key)) cells.set(key, []);
        cells.get(key).push(i);
      }
      return cells;
    }

    function cellOf(x, y) {
      const gx = Math.max(0, Math.min(GRID - 1, Math.floor(((x + 1) / 2) * GRID)));
      const gy = Math.max(0, Math.min(GRID - 1, Math.floor(((y + 1) / 2) * GRID)));
      return gy * GRID + gx;
    }

    function scale() {
      return (Math.min(width, height) / 2.15) * view.zoom; // [-1, 1] fits with a margin
    }

    function toScreen(x, y) {
      const s = scale();
      return [width / 2 + (x - view.cx) * s, height / 2 - (y - view.cy) * s];
    }

    function toWorld(sx, sy) {
      const s = scale();
      return [view.cx + (sx - width / 2) / s, view.cy - (sy - height / 2) / s];
    }

    function pointSize() {
      // Dots grow as you zoom in, so a crowd becomes pictures.
      const base = Math.max(2, Math.min(40, 0.35 * Math.sqrt((width * height) / (n + 1))));
      return Math.min(96, base * Math.sqrt(view.zoom) * (view.zoom > 4 ? view.zoom / 4 : 1));
    }

    function resize() {
      const ratio = window.devicePixelRatio || 1;
      width = container.clientWidth || 800;
      height = container.clientHeight || 600;
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
      canvas.style.width = `${width}px`;
      canvas.style.height = `${height}px`;
      context.setTransform(ratio, 0, 0, ratio, 0, 0);
      redraw();
    }

    function redraw() {
      if (pending) return;
      pending = true;
      requestAnimationFrame(draw);
    }

    function thumbnailFor(i) {
      if (data.atlas) {
        const at = data.atlas.index[i];
        if (at < 0) return null;
        const sheet = sheets[Math.floor(at / data.atlas.per_sheet)];
        if (!sheet || !sheet.complete || !sheet.naturalWidth) return null;
        const within = at % data.atlas.per_sheet;
        const t = data.atlas.tile;
        return [sheet, (within % data.atlas.columns) * t, Math.floor(within / data.atlas.columns) * t, t];
      }
      if (!options.thumbnailUrl) return null;
      let image = loaded.get(i);
      if (!image) {
        if (loaded.size > 4000) loaded.clear();
        image = new Image();
        image.onload = () => redraw();
        image.src = options.thumbnailUrl(i);
        loaded.set(i, image);
      }
      return image.complete && image.naturalWidth ? [image, 0, 0, 0] : null;
    }

    function draw() {
      pending = false;
      context.clearRect(0, 0, width, height);
      context.fillStyle = "#f6f6f4";
      context.fillRect(0, 0, width, height);
      for (const c of data.clusters) {
        if (c.outline.length < 3) continue;
        context.beginPath();
        c.outline.forEach(([x, y], k) => {
          const [sx, sy] = toScreen(x, y);
          if (k === 0) context.moveTo(sx, sy);
          else context.lineTo(sx, sy);
        });
        context.closePath();
        context.globalAlpha = selectedCluster === c.cluster ? 0.22 : 0.08;
        context.fillStyle = colour(c.cluster - 1);
        context.fill();
        context.globalAlpha = 0.7;
        context.lineWidth = selectedCluster === c.cluster ? 2.5 : 1.2;
        context.strokeStyle = colour(c.cluster - 1);
        context.stroke();
        context.globalAlpha = 1;
      }
      const size = pointSize();
      const half = size / 2;
      const thumbs = size >= THUMBS_AT_PX;
      let drawn = 0;
      let pictures = 0;
      const byCluster = new Map();
      for (let i = 0; i < n; i++) {
        const [sx, sy] = toScreen(data.x[i], data.y[i]);
        if (sx < -size || sy < -size || sx > width + size || sy > height + size) continue;
        drawn++;
        if (thumbs && pictures < MAX_THUMBS_A_FRAME) {
          const found = thumbnailFor(i);
          if (found) {
            const [image, ox, oy, t] = found;
            if (t) context.drawImage(image, ox, oy, t, t, sx - half, sy - half, size, size);
            else context.drawImage(image, sx - half, sy - half, size, size);
            pictures++;
            continue;
          }
        }
        const c = data.cluster[i];
        if (!byCluster.has(c)) byCluster.set(c, []);
        byCluster.get(c).push(sx - half, sy - half);
      }
      for (const [c, corners] of byCluster) {
        context.fillStyle = colour(c);
        context.beginPath();
        for (let k = 0; k < corners.length; k += 2) context.rect(corners[k], corners[k + 1], size, size);
        context.fill();
      }
      if (hovered >= 0) {
        const [sx, sy] = toScreen(data.x[hovered], data.y[hovered]);
        context.lineWidth = 2;
        context.strokeStyle = "#111";
        context.strokeRect(sx - half - 2, sy - half - 2, size + 4, size + 4);
      }
      context.font = "600 13px system-ui, sans-serif";
      context.textAlign = "center";
      context.textBaseline = "middle";
      for (const c of data.clusters) {
        // Above its outline, so the label doesn't hide the photos it names.
        const top = c.outline.length ? Math.max(...c.outline.map((p) => p[1])) : c.y;
        const [sx, edge] = toScreen(c.x, top);
        const sy = edge - half - 14;
        labelAt.set(c.cluster, [sx, sy]);
        const text = `${c.label} (${c.size})`;
        const w = context.measureText(text).width + 10;
        context.globalAlpha = 0.85;
        context.fillStyle = "#fff";
        context.fillRect(sx - w / 2, sy - 10, w, 20);
        context.globalAlpha = 1;
        context.strokeStyle = colour(c.cluster - 1);
        context.lineWidth = 1;
        context.strokeRect(sx - w / 2, sy - 10, w, 20);
        context.fillStyle = "#111";
        context.fillText(text, sx, sy);
      }
      canvas.dataset.pointsDrawn = String(drawn);
      canvas.dataset.thumbnailsDrawn = String(pictures);
      canvas.dataset.zoom = view.zoom.toFixed(3);
      if (options.onDraw) options.onDraw({ points: drawn, thumbnails: pictures });
    }

    function nearestPoint(sx, sy) {
      const [wx, wy] = toWorld(sx, sy);
      const reach = Math.max(pointSize() / 2 + 3, 5) / scale();
      const cells = Math.ceil((reach * GRID) / 2) + 1;
      const gx = Math.floor(((wx + 1) / 2) * GRID);
      const gy = Math.floor(((wy + 1) / 2) * GRID);
      let best = -1;
      let bestDistance = reach * reach;
      for (let y = gy - cells; y <= gy + cells; y++) {
        if (y < 0 || y >= GRID) continue;
        for (let x = gx - cells; x <= gx + cells; x++) {
          if (x < 0 || x >= GRID) continue;
          for (const i of grid.get(y * GRID + x) || []) {
            const d = (data.x[i] - wx) ** 2 + (data.y[i] - wy) ** 2;
            if (d <= bestDistance) {
              bestDistance = d;
              best = i;
            }
          }
        }
      }
      return best;
    }

    function clusterAt(sx, sy) {
      for (const c of data.clusters) {
        const [lx, ly] = labelAt.get(c.cluster) || toScreen(c.x, c.y);
        if (Math.abs(sx - lx) < 60 && Math.abs(sy - ly) < 11) return c; // its label
      }
      const world = toWorld(sx, sy);
      let found = null;
      for (const c of data.clusters) {
        if (c.outline.length >= 3 && inside(world, c.outline) && (!found || c.size < found.size)) found = c;
      }
      return found;
    }

    function zoomAt(sx, sy, factor) {
      const [wx, wy] = toWorld(sx, sy);
      view.zoom = Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, view.zoom * factor));
      const s = scale();
      view.cx = wx - (sx - width / 2) / s;
      view.cy = wy + (sy - height / 2) / s;
      redraw();
    }

    function showTip(i, sx, sy) {
      if (i < 0) {
        tip.hidden = true;
        return;
      }
      const c = data.clusters[data.cluster[i]];
      tip.textContent = data.paths[i] + (c ? ` — ${c.label}` : "");
      tip.hidden = false;
      tip.style.left = `${Math.min(sx + 14, width - 260)}px`;
      tip.style.top = `${sy + 14}px`;
    }

    let drag = null;
    canvas.addEventListener("pointerdown", (event) => {
      drag = { x: event.clientX, y: event.clientY, cx: view.cx, cy: view.cy, moved: false };
      canvas.setPointerCapture(event.pointerId);
    });
    canvas.addEventListener("pointermove", (event) => {
      const box = canvas.getBoundingClientRect();
      const sx = event.clientX - box.left;
      const sy = event.clientY - box.top;
      if (drag) {
        const dx = event.clientX - drag.x;
        const dy = event.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
        if (drag.moved) {
          view.cx = drag.cx - dx / scale();
          view.cy = drag.cy + dy / scale();
          tip.hidden = true;
          redraw();
          return;
        }
      }
      const i = nearestPoint(sx, sy);
      if (i !== hovered) {
        hovered = i;
        redraw();
      }
      showTip(i, sx, sy);
      canvas.style.cursor = i >= 0 || clusterAt(sx, sy) ? "pointer" : "grab";
    });
    canvas.addEventListener("pointerup", (event) => {
      const wasDrag = drag && drag.moved;
      drag = null;
      if (wasDrag) return;
      const box = canvas.getBoundingClientRect();
      const sx = event.clientX - box.left;
      const sy = event.clientY - box.top;
      const i = nearestPoint(sx, sy);
      if (i >= 0 && options.onPoint) {
        options.onPoint(i);
        return;
      }
      const c = clusterAt(sx, sy);
      if (c) {
        selectedCluster = c.cluster;
        redraw();
        if (options.onCluster) options.onCluster(c);
      }
    });
    canvas.addEventListener("pointerleave", () => {
      tip.hidden = true;
      hovered = -1;
      redraw();
    });
    canvas.addEventListener(
      "wheel",
      (event) => {
        event.preventDefault();
        const box = canvas.getBoundingClientRect();
        zoomAt(event.clientX - box.left, event.clientY - box.top, Math.exp(-event.deltaY * (event.deltaMode ? 0.05 : 0.0015)));
      },
      { passive: false }
    );
    canvas.addEventListener("dblclick", (event) => {
      const box = canvas.getBoundingClientRect();
      zoomAt(event.clientX - box.left, event.clientY - box.top, 2);
    });
    canvas.addEventListener("keydown", (event) => {
      const step = 60 / scale();
      const keys = {
        "+": () => zoomAt(width / 2, height / 2, 1.25),
        "=": () => zoomAt(width / 2, height / 2, 1.25),
        "-": () => zoomAt(width / 2, height / 2, 0.8),
        0: () => reset(),
        ArrowLeft: () => (view.cx -= step),
        ArrowRight: () => (view.cx += step),
        ArrowUp: () => (view.cy += step),
        ArrowDown: () => (view.cy -= step),
      };
      if (!keys[event.key]) return;
      event.preventDefault();
      keys[event.key]();
      redraw();
    });

    function reset() {
      view.zoom = 1;
      view.cx = 0;
      view.cy = 0;
      redraw();
    }

    function focusCluster(number) {
      const c = data.clusters.find((k) => k.cluster === number);
      if (!c) return;
      selectedCluster = number;
      view.cx = c.x;
      view.cy = c.y;
      redraw();
    }

    new ResizeObserver(resize).observe(container);
    resize();
    // toScreen: where point i is drawn, in page pixels (what a test or a script can point at).
    const pointOnPage = (i) => {
      const box = canvas.getBoundingClientRect();
      const [sx, sy] = toScreen(data.x[i], data.y[i]);
      return [box.left + sx, box.top + sy];
    };
    const labelOnPage = (number) => {
      const box = canvas.getBoundingClientRect();
      const at = labelAt.get(number);
      return at ? [box.left + at[0], box.top + at[1]] : null;
    };
    return { canvas, reset, zoomAt, focusCluster, redraw, view, pointOnPage, labelOnPage, select: (number) => { selectedCluster = number; redraw(); } };
  }

  window.PhotoMap = { create, colour };
})();
