"""`photosearch map --output map.html`: one self-contained HTML file, offline.

Everything is inside the file: the points (positions, clusters, paths), the clusters'
outlines and labels, the viewer (photosearch/web/static/map.js, the same one the gallery's
Map view runs) and the thumbnails, as a few JPEG atlases (sheets of small square tiles)
in data URIs: one image decode a sheet, not one a photo, and nothing fetched. Tiles are
smaller the more photos there are (`tile_size`), so 50 000 photos stay a file a browser
opens in seconds. Clicking a photo shows it: the original through a file:// link (a browser
shows JPEG, PNG, WebP, GIF, AVIF), else its tile enlarged.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

from photosearch.output import display_path

# The clusters' colours, in map.js's order: the PNG draws a cluster as the HTML does.
PALETTE_HEX = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
    "#17becf", "#bcbd22", "#7f7f7f", "#ff7f0e",
)
SHEET_COLUMNS = 64  # tiles a row of an atlas sheet; 64 × 64 tiles a sheet
STATIC = Path(__file__).resolve().parent.parent / "web" / "static"


def tile_size(photos: int) -> int:
    """Pixels a side of each photo's tile: sharp when zoomed in, small when there are many."""
    if photos <= 2_000:
        return 96
    if photos <= 10_000:
        return 64
    if photos <= 30_000:
        return 48
    return 32


def map_data(made, *, paths: bool = True) -> dict:
    """What the viewer draws (the gallery's /api/map answers the same, with photo ids)."""
    return {
        "schema": 1,
        "generation": made.generation,
        "method": made.method,
        "photos": len(made),
        "x": [round(float(v), 4) for v in made.positions[:, 0]],
        "y": [round(float(v), 4) for v in made.positions[:, 1]],
        "cluster": [int(c) for c in made.assignment],
        "ids": [int(i) for i in made.ids],
        "paths": [display_path(made.photos[int(i)].path) if int(i) in made.photos else "" for i in made.ids] if paths else [],
        "clusters": [
            {
                "cluster": c.cluster,
                "size": c.size,
                "label": c.label,
                "label_score": round(c.label_score, 6),
                "labels": [{"label": name, "probability": round(p, 6)} for name, p in c.labels],
                "x": round(c.position[0], 4),
                "y": round(c.position[1], 4),
                "outline": [[round(x, 4), round(y, 4)] for x, y in c.outline],
                "examples": [int(p.id) for p in c.examples],
            }
            for c in made.clusters
        ],
    }


def atlas(made, thumbnail: Callable | None, on_step: Callable[[str], None]) -> dict | None:
    """The photos' tiles packed in JPEG sheets: {tile, columns, per_sheet, sheets: [data
    URI], index: [tile number of each point, -1 if it has none]}."""
    if thumbnail is None:
        return None
    from PIL import Image, ImageOps

    size = tile_size(len(made))
    per_sheet = SHEET_COLUMNS * SHEET_COLUMNS
    index: list[int] = []
    sheets: list[str] = []
    sheet = None
    placed = 0
    on_step(f"drawing {len(made)} thumbnails ({size} px tiles)")
    for photo_id in made.ids:
        photo = made.photos.get(int(photo_id))
        found = thumbnail(photo)[0] if photo is not None else None
        if found is None:
            index.append(-1)
            continue
        try:
            with Image.open(found) as image:
                image.draft("RGB", (size, size))
                tile = ImageOps.fit(image.convert("RGB"), (size, size))
        except (OSError, ValueError):
            index.append(-1)
            continue
        at = placed % per_sheet
        if at == 0:
            if sheet is not None:
                sheets.append(_data_uri(sheet))
            left = len(made) - placed
            rows = min(SHEET_COLUMNS, -(-left // SHEET_COLUMNS))
            sheet = Image.new("RGB", (SHEET_COLUMNS * size, rows * size), (238, 238, 238))
        sheet.paste(tile, ((at % SHEET_COLUMNS) * size, (at // SHEET_COLUMNS) * size))
        index.append(placed)
        placed += 1
    if sheet is not None:
        sheets.append(_data_uri(sheet))
    missing = index.count(-1)
    if missing:
        on_step(f"{missing} photos have no thumbnail (gone or changed since indexed): drawn as dots")
    return {"tile": size, "columns": SHEET_COLUMNS, "per_sheet": per_sheet, "sheets": sheets, "index": index}


def _data_uri(sheet) -> str:
    out = io.BytesIO()
    sheet.save(out, "JPEG", quality=80, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _inline_json(value) -> str:
    """JSON that can sit inside a <script> element: no `</script>` can end it early."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/").replace("<!--", "<\\!--")


def render(made, thumbnail: Callable | None, on_step: Callable[[str], None] | None = None) -> str:
    step = on_step or (lambda message: None)
    data = map_data(made)
    data["atlas"] = atlas(made, thumbnail, step)
    data["file_urls"] = [Path(p).as_uri() if os.path.isabs(p) else "" for p in data["paths"]]
    title = f"photosearch map: {len(made)} photos, {len(made.clusters)} clusters"
    viewer = (STATIC / "map.js").read_text(encoding="utf-8")
    return PAGE.format(
        title=html.escape(title),
        css=CSS,
        viewer=viewer.replace("</", "<\\/"),
        data=_inline_json(data),
        page=PAGE_SCRIPT,
    )


def write(made, target: Path, thumbnail: Callable | None, *, on_step: Callable[[str], None] | None = None) -> None:
    """Write the map's HTML file to `target` (atomically: a reader never sees half a file)."""
    text = render(made, thumbnail, on_step)
    temporary = target.with_name(f".{target.name}.partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, target)


CSS = """
* { box-sizing: border-box; }
html, body { margin: 0; height: 100%; font: 14px/1.4 system-ui, sans-serif; color: #111; background: #f6f6f4; }
body { display: flex; }
#side { width: 280px; overflow: auto; border-right: 1px solid #ddd; background: #fff; padding: 12px; }
#side h1 { font-size: 15px; margin: 0 0 4px; }
#side p { margin: 0 0 10px; color: #555; font-size: 12px; }
#clusters { list-style: none; margin: 0; padding: 0; }
#clusters li button { all: unset; cursor: pointer; display: flex; gap: 8px; align-items: center; width: 100%; padding: 4px 2px; border-radius: 4px; }
#clusters li button:hover, #clusters li button:focus { background: #eef; }
#clusters .swatch { width: 12px; height: 12px; border-radius: 2px; flex: none; }
#clusters .size { margin-left: auto; color: #777; font-variant-numeric: tabular-nums; }
#stage { position: relative; flex: 1; min-width: 0; }
.photo-map-canvas { display: block; cursor: grab; outline: none; touch-action: none; }
.photo-map-tip { position: absolute; pointer-events: none; background: rgba(20,20,20,.88); color: #fff; padding: 3px 7px; border-radius: 4px; font-size: 12px; max-width: 420px; overflow-wrap: anywhere; }
#help { position: absolute; right: 10px; bottom: 8px; color: #666; font-size: 12px; background: rgba(255,255,255,.8); padding: 2px 6px; border-radius: 4px; }
#detail { position: fixed; inset: 0; background: rgba(0,0,0,.6); display: flex; align-items: center; justify-content: center; }
#detail[hidden] { display: none; }
#detail .box { background: #fff; padding: 14px; border-radius: 8px; max-width: 92vw; max-height: 92vh; display: flex; flex-direction: column; gap: 8px; }
#detail img { max-width: 88vw; max-height: 74vh; object-fit: contain; image-rendering: auto; min-width: 240px; background: #eee; }
#detail .path { font-family: ui-monospace, monospace; font-size: 12px; overflow-wrap: anywhere; }
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<nav id="side" aria-label="Clusters">
  <h1>{title}</h1>
  <p>Scroll to zoom, drag to pan, hover for a photo's path, click it to see it; click a cluster to go to it. Keys: + − 0 and arrows.</p>
  <ol id="clusters"></ol>
</nav>
<main id="stage" aria-label="Map"><div id="help">0 resets the view</div></main>
<div id="detail" role="dialog" aria-modal="true" aria-labelledby="detail-path" hidden>
  <div class="box">
    <img id="detail-img" alt="">
    <div class="path" id="detail-path"></div>
    <div><a id="detail-open" target="_blank" rel="noopener">Open the original</a> · <span id="detail-cluster"></span> · <button type="button" id="detail-close">Close (Esc)</button></div>
  </div>
</div>
<script type="application/json" id="map-data">{data}</script>
<script>{viewer}</script>
<script>{page}</script>
</body>
</html>
"""

PAGE_SCRIPT = """
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("map-data").textContent);
  const $ = (id) => document.getElementById(id);
  function tileUrl(i) {
    const a = data.atlas;
    if (!a || a.index[i] < 0) return null;
    const at = a.index[i] % a.per_sheet;
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = a.tile;
    const sheet = new Image();
    sheet.src = a.sheets[Math.floor(a.index[i] / a.per_sheet)];
    canvas.getContext("2d").drawImage(sheet, (at % a.columns) * a.tile, Math.floor(at / a.columns) * a.tile, a.tile, a.tile, 0, 0, a.tile, a.tile);
    return canvas.toDataURL("image/jpeg");
  }
  function showPhoto(i) {
    const img = $("detail-img");
    const fallback = tileUrl(i);
    img.onerror = () => { img.onerror = null; if (fallback) img.src = fallback; };
    img.alt = data.paths[i];
    img.src = data.file_urls[i] || fallback || "";
    $("detail-path").textContent = data.paths[i];
    $("detail-open").href = data.file_urls[i] || "#";
    const c = data.clusters[data.cluster[i]];
    $("detail-cluster").textContent = c ? `cluster ${c.cluster}: ${c.label}` : "";
    $("detail").hidden = false;
    $("detail-close").focus();
  }
  function closeDetail() { $("detail").hidden = true; map.canvas.focus(); }
  const map = window.PhotoMap.create($("stage"), data, {
    onPoint: showPhoto,
    onCluster: (c) => map.focusCluster(c.cluster),
    onDraw: (drawn) => {
      document.body.dataset.pointsDrawn = String(drawn.points);
      document.body.dataset.thumbnailsDrawn = String(drawn.thumbnails);
      window.photosearchMap = { photos: data.photos, clusters: data.clusters.length, drawn: drawn.points, thumbnails: drawn.thumbnails, map };
    },
  });
  const list = $("clusters");
  for (const c of data.clusters) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = window.PhotoMap.colour(c.cluster - 1);
    const name = document.createElement("span");
    name.textContent = c.label;
    name.title = c.labels.map((l) => `${l.label} ${(100 * l.probability).toFixed(0)}%`).join(", ");
    const size = document.createElement("span");
    size.className = "size";
    size.textContent = c.size;
    button.append(swatch, name, size);
    button.addEventListener("click", () => map.focusCluster(c.cluster));
    item.append(button);
    list.append(item);
  }
  $("detail-close").addEventListener("click", closeDetail);
  $("detail").addEventListener("click", (event) => { if (event.target === $("detail")) closeDetail(); });
  document.addEventListener("keydown", (event) => { if (event.key === "Escape" && !$("detail").hidden) closeDetail(); });
  map.canvas.focus();
})();
"""
