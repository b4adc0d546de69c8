// photosearch gallery: the page over the JSON API (docs/web.md). No framework, no CDN.
"use strict";

const PAGE = 48;
const TYPE_PAUSE_MS = 450; // search as you type, once typing pauses this long
const $ = (id) => document.getElementById(id);

const state = {
  query: null, // {kind: "text", text} | {kind: "like", id, name} | {kind: "image", blob, name}
  add: [], // terms: {kind: "text", text} | {kind: "photo", id, name}
  sub: [],
  filters: {},
  sort: "score", // score | date | path: the order of the best matches
  within: "", // only results within this much of the best score ("" for any)
  literal: false, // true: the words as typed, negations not read
  results: [],
  more: false,
  current: -1, // the result the keyboard is on
  view: "search",
  inflight: null,
  lastTyped: "",
  generation: null,
};

// -- talking to the API ----------------------------------------------------------------

function termParam(term) {
  return term.kind === "photo" ? `photo:${term.id}` : term.text;
}

function filterParams(params) {
  for (const [name, value] of Object.entries(state.filters)) {
    if (value !== "" && value != null) params.append(name, value);
  }
}

function searchParams(offset) {
  const params = new URLSearchParams();
  if (state.query.kind === "text") params.set("q", state.query.text);
  if (state.query.kind === "like") params.set("like", state.query.id);
  params.set("top", PAGE);
  params.set("offset", offset);
  state.add.forEach((t) => params.append("add", termParam(t)));
  state.sub.forEach((t) => params.append("sub", termParam(t)));
  if (state.sort !== "score") params.set("sort", state.sort);
  if (state.within !== "") params.set("within", state.within);
  if (state.literal) params.set("literal", "true");
  filterParams(params);
  return params;
}

async function api(url, options = {}) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = { error: `the server answered ${response.status} with no JSON`, hint: "is this a photosearch server?" };
  }
  if (!response.ok) {
    const error = new Error(body.error || `HTTP ${response.status}`);
    error.hint = body.hint;
    throw error;
  }
  return body;
}

function showError(error) {
  if (error.name === "AbortError") return;
  const box = $("error");
  box.textContent = error.message + (error.hint ? ` — ${error.hint}` : "");
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// -- searching -------------------------------------------------------------------------

async function search({ append = false } = {}) {
  if (!state.query) return;
  showView("search");
  if (state.inflight) state.inflight.abort();
  const controller = new AbortController();
  state.inflight = controller;
  const offset = append ? state.results.length : 0;
  const params = searchParams(offset);
  const options = { signal: controller.signal };
  if (state.query.kind === "image") {
    options.method = "POST";
    options.body = state.query.blob;
    options.headers = { "Content-Type": state.query.blob.type || "application/octet-stream" };
  }
  clearError();
  $("status").textContent = "Searching…";
  try {
    const page = state.query.kind === "cluster" ? await clusterPage(offset, controller) : await api(`/api/search?${params}`, options);
    if (controller !== state.inflight) return; // a newer search has started
    state.results = append ? state.results.concat(page.results) : page.results;
    state.more = page.more;
    renderResults(append ? page.results : null);
    $("status").textContent = describe(page);
    renderReading(page);
  } catch (error) {
    if (controller === state.inflight) {
      $("status").textContent = "";
      renderReading(null);
      showError(error);
    }
  } finally {
    if (controller === state.inflight) state.inflight = null;
  }
}

const ORDER_WORDS = { score: "best first", date: "newest first", path: "in path order" };

function describe(page) {
  const n = state.results.length;
  if (state.query && state.query.kind === "cluster") {
    return `Cluster ${page.cluster} of the map, “${page.label}”: ${page.size} photos, nearest its centre first.`;
  }
  if (!n) return `No photos matched “${page.query}”.`;
  const terms = state.add.length + state.sub.length;
  const extra = terms ? ` with ${terms} more/less term${terms > 1 ? "s" : ""}` : "";
  const within = state.within !== "" ? `, within ${state.within} of the best` : "";
  return `${n}${state.more ? "+" : ""} photos for “${page.query}”${extra}${within}, ${ORDER_WORDS[state.sort]}.`;
}

// How the server read the words: "a beach without people" is searched as "a beach" − "people".
function renderReading(page) {
  const box = $("reading");
  const text = $("reading-text");
  if (page && page.parsed) {
    const minus = page.parsed.sub.map((s) => ` − “${s}”`).join("");
    text.textContent = `Searched for “${page.parsed.text}”${minus}, read from “${page.query}”.`;
  } else if (page && page.note) {
    text.textContent = `“${page.query}” was searched as typed: ${page.note}.`;
  } else {
    box.hidden = true;
    text.textContent = "";
    return;
  }
  $("reading-literal").hidden = Boolean(page.note);
  box.hidden = false;
}

function readOptions() {
  state.sort = $("sort").value;
  state.within = $("within").value.trim();
  state.literal = $("literal").checked;
}

function searchText(text) {
  text = text.trim();
  if (!text) return;
  state.query = { kind: "text", text };
  state.lastTyped = text;
  search();
}

function searchLike(result) {
  state.query = { kind: "like", id: result.id, name: fileName(result.path) };
  $("q").value = "";
  search();
}

function searchImage(file) {
  if (!file) return;
  state.query = { kind: "image", blob: file, name: file.name };
  $("q").value = "";
  search();
}

// -- rendering -------------------------------------------------------------------------

function fileName(path) {
  const parts = path.split(/[\\/]/);
  return parts[parts.length - 1];
}

function shortDate(iso) {
  return iso ? iso.slice(0, 10) : "";
}

function tile(result, index, { score = true } = {}) {
  const figure = document.createElement("figure");
  figure.className = "tile";
  figure.tabIndex = 0;
  figure.dataset.id = result.id;
  figure.dataset.index = index;
  figure.dataset.path = result.path;
  const frame = document.createElement("div");
  frame.className = "frame";
  const img = document.createElement("img");
  img.alt = fileName(result.path);
  img.loading = "lazy";
  img.decoding = "async";
  img.src = `/api/photos/${result.id}/thumbnail`;
  img.addEventListener("error", () => img.classList.add("broken"));
  frame.appendChild(img);
  const caption = document.createElement("figcaption");
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = fileName(result.path);
  name.title = result.path;
  const meta = document.createElement("div");
  meta.className = "meta";
  const scoreSpan = document.createElement("span");
  scoreSpan.className = "score";
  const value = score ? result.score : result.similarity;
  scoreSpan.textContent = value != null ? value.toFixed(3) : "";
  const date = document.createElement("span");
  date.className = "date";
  date.textContent = shortDate(result.taken_at);
  meta.append(scoreSpan, date);
  const actions = document.createElement("div");
  actions.className = "tile-actions";
  const like = button("More like this", () => searchLike(result));
  like.className = "like";
  const unlike = button("Less like this", () => addTerm("sub", { kind: "photo", id: result.id, name: fileName(result.path) }));
  unlike.className = "unlike";
  actions.append(like, unlike);
  caption.append(name, meta, actions);
  figure.append(frame, caption);
  frame.addEventListener("click", () => openDetail(result, figure));
  figure.addEventListener("focus", () => {
    if (figure.dataset.index !== undefined && figure.closest("#grid")) state.current = Number(figure.dataset.index);
  });
  return figure;
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", (event) => {
    event.stopPropagation();
    onClick();
  });
  return b;
}

function renderResults(appended) {
  const grid = $("grid");
  if (!appended) {
    grid.replaceChildren();
    state.current = -1;
  }
  const start = appended ? state.results.length - appended.length : 0;
  const fragment = document.createDocumentFragment();
  state.results.slice(start).forEach((result, i) => fragment.appendChild(tile(result, start + i)));
  grid.appendChild(fragment);
  $("more").hidden = !state.more;
}

// -- more/less terms and filters --------------------------------------------------------

function addTerm(which, term) {
  const list = state[which];
  const key = termParam(term);
  if (!list.some((t) => termParam(t) === key)) list.push(term);
  renderChips();
  search();
}

function renderChips() {
  const chips = $("chips");
  chips.replaceChildren();
  for (const which of ["add", "sub"]) {
    state[which].forEach((term, i) => {
      const chip = document.createElement("span");
      chip.className = `chip ${which}`;
      chip.dataset.term = termParam(term);
      const sign = document.createElement("span");
      sign.textContent = which === "add" ? "+" : "−";
      chip.appendChild(sign);
      if (term.kind === "photo") {
        const img = document.createElement("img");
        img.src = `/api/photos/${term.id}/thumbnail`;
        img.alt = term.name;
        chip.appendChild(img);
      }
      const label = document.createElement("span");
      label.textContent = term.kind === "photo" ? term.name : term.text;
      chip.appendChild(label);
      const remove = button("×", () => {
        state[which].splice(i, 1);
        renderChips();
        search();
      });
      remove.setAttribute("aria-label", `remove ${label.textContent}`);
      chip.appendChild(remove);
      chips.appendChild(chip);
    });
  }
}

function readFilters() {
  const value = (id) => $(id).value.trim();
  state.filters = {
    in: value("f-in"),
    since: value("f-since"),
    until: value("f-until"),
    min_width: value("f-min-width"),
    min_height: value("f-min-height"),
  };
  const active = Object.values(state.filters).filter((v) => v !== "").length;
  $("filter-summary").textContent = active ? `(${active} on)` : "";
}

function applyFilters() {
  readFilters();
  if (state.view === "duplicates") loadDuplicates();
  else if (state.view === "map") loadMap();
  else search();
}

// -- the detail view -------------------------------------------------------------------

let detailReturn = null;
let detailResult = null;

async function openDetail(result, from) {
  detailReturn = from || document.activeElement;
  detailResult = result;
  const dialog = $("detail");
  const img = $("detail-img");
  img.alt = fileName(result.path);
  img.src = `/api/photos/${result.id}/thumbnail`; // at once, then the original when it arrives
  const original = new Image();
  original.onload = () => {
    if (detailResult === result) img.src = original.src;
  };
  original.src = `/api/photos/${result.id}/original`;
  $("detail-name").textContent = fileName(result.path);
  $("detail-path").value = result.path;
  $("detail-original").href = `/api/photos/${result.id}/original`;
  renderMeta(result);
  dialog.hidden = false;
  $("detail-close").focus();
  try {
    const photo = await api(`/api/photos/${result.id}`);
    if (detailResult === result) renderMeta({ ...photo, ...result, folder: photo.folder });
  } catch (error) {
    showError(error);
  }
}

function renderMeta(item) {
  const rows = [
    ["Rank", item.rank],
    ["Score", item.score != null ? item.score.toFixed(4) : null],
    ["Similarity", item.similarity != null ? item.similarity.toFixed(4) : null],
    ["Taken", item.taken_at ? item.taken_at.replace("T", " ") : null],
    ["Size", item.width && item.height ? `${item.width} × ${item.height} px` : null],
    ["File size", item.size_bytes != null ? humanBytes(item.size_bytes) : null],
    ["Folder", item.folder],
    ["Path", item.path],
    ["Photo id", item.id],
  ];
  const dl = $("detail-meta");
  dl.replaceChildren();
  for (const [name, value] of rows) {
    if (value == null || value === "") continue;
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dl.append(dt, dd);
  }
}

function humanBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function closeDetail() {
  $("detail").hidden = true;
  $("detail-img").removeAttribute("src");
  detailResult = null;
  if (detailReturn && document.body.contains(detailReturn)) detailReturn.focus();
}

function stepDetail(delta) {
  if (!detailResult) return;
  const index = state.results.findIndex((r) => r.id === detailResult.id);
  if (index < 0) return;
  const next = index + delta;
  if (next < 0 || next >= state.results.length) return;
  state.current = next;
  openDetail(state.results[next], tileAt(next));
}

// -- the keyboard ----------------------------------------------------------------------

function tileAt(index) {
  return $("grid").querySelector(`.tile[data-index="${index}"]`);
}

function columns() {
  const template = getComputedStyle($("grid")).gridTemplateColumns;
  return Math.max(1, template.split(" ").filter(Boolean).length);
}

function moveTo(index) {
  if (!state.results.length) return;
  index = Math.max(0, Math.min(state.results.length - 1, index));
  const target = tileAt(index);
  if (!target) return;
  state.current = index;
  target.focus();
  target.scrollIntoView({ block: "nearest" });
  if (index >= state.results.length - columns() && state.more) search({ append: true });
}

function onKey(event) {
  if (!$("detail").hidden) {
    if (event.key === "Escape") {
      event.preventDefault();
      closeDetail();
    } else if (event.key === "ArrowRight") stepDetail(1);
    else if (event.key === "ArrowLeft") stepDetail(-1);
    return;
  }
  const typing = event.target.matches("input, textarea, select");
  if (typing || state.view !== "search") return;
  const current = state.current < 0 ? -1 : state.current;
  const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() };
  if (event.key in moves) {
    event.preventDefault();
    moveTo(current < 0 ? 0 : current + moves[event.key]);
  } else if (event.key === "Enter" && event.target.classList.contains("tile")) {
    event.preventDefault();
    openDetail(state.results[Number(event.target.dataset.index)], event.target);
  } else if (event.key === "/") {
    event.preventDefault();
    $("q").focus();
  }
}

// -- duplicates ------------------------------------------------------------------------

async function loadDuplicates() {
  showView("duplicates");
  clearError();
  const params = new URLSearchParams();
  params.set("threshold", $("dup-threshold").value || "0.97");
  filterParams(params);
  $("status").textContent = "Looking for near-duplicates…";
  try {
    const answer = await api(`/api/duplicates?${params}`);
    const groups = $("groups");
    groups.replaceChildren();
    for (const group of answer.groups) {
      const section = document.createElement("section");
      section.className = "group";
      const title = document.createElement("h3");
      title.textContent = `Group ${group.group}: ${group.size} photos`;
      const members = document.createElement("div");
      members.className = "members";
      group.photos.forEach((photo) => members.appendChild(tile(photo, undefined, { score: false })));
      section.append(title, members);
      groups.appendChild(section);
    }
    $("status").textContent = answer.groups.length
      ? `${answer.groups.length} group${answer.groups.length > 1 ? "s" : ""} of near-duplicate photos, biggest first.`
      : "No near-duplicate photos at this similarity.";
  } catch (error) {
    $("status").textContent = "";
    showError(error);
  }
}

function showView(view) {
  state.view = view;
  $("results").hidden = view !== "search";
  $("duplicates").hidden = view !== "duplicates";
  $("map").hidden = view !== "map";
  for (const [id, name] of [["view-search", "search"], ["view-duplicates", "duplicates"], ["view-map", "map"]]) {
    $(id).classList.toggle("active", view === name);
    $(id).setAttribute("aria-pressed", String(view === name));
  }
}

// -- the map ---------------------------------------------------------------------------
// The library laid out by similarity (photosearch map): clicking a cluster shows its photos
// in the results, clicking a photo opens it.

const mapState = { key: null, data: null, view: null };

async function loadMap() {
  showView("map");
  clearError();
  const params = new URLSearchParams();
  filterParams(params);
  const key = `${params}|${state.generation}`;
  if (mapState.key === key && mapState.view) {
    $("status").textContent = mapStatus(mapState.data);
    return;
  }
  $("status").textContent = "Drawing the map… (the first time for a big library takes a while)";
  try {
    const data = await api(`/api/map?${params}`);
    mapState.key = key;
    mapState.data = data;
    $("map-stage").replaceChildren();
    mapState.view = window.PhotoMap.create($("map-stage"), data, {
      onPoint: (i) => openDetail({ id: data.ids[i], path: data.paths[i] }, mapState.view.canvas),
      onCluster: (c) => searchCluster(c),
      thumbnailUrl: (i) => `/api/photos/${data.ids[i]}/thumbnail`,
      onDraw: (drawn) => {
        $("map").dataset.pointsDrawn = String(drawn.points);
        window.photosearchMap = { photos: data.photos, drawn: drawn.points, map: mapState.view };
      },
    });
    $("status").textContent = mapStatus(data);
  } catch (error) {
    $("status").textContent = "";
    showError(error);
  }
}

function mapStatus(data) {
  return `${data.photos} photos in ${data.clusters.length} clusters. Scroll to zoom, drag to pan; click a cluster to see its photos.`;
}

function searchCluster(cluster) {
  state.query = { kind: "cluster", cluster: cluster.cluster, label: cluster.label };
  $("q").value = "";
  search();
}

async function clusterPage(offset, controller) {
  const params = new URLSearchParams();
  params.set("top", PAGE);
  params.set("offset", offset);
  filterParams(params);
  const page = await api(`/api/map/clusters/${state.query.cluster}?${params}`, { signal: controller.signal });
  return { ...page, query: `cluster ${page.cluster}: ${page.label}`, parsed: null, note: null };
}

// -- a library that changes while the page is open --------------------------------------

async function watchLibrary() {
  try {
    const info = await api("/api/info");
    if (state.generation !== null && info.generation !== state.generation && !state.inflight) {
      $("status").textContent = `The library changed: ${info.photos} photos now.` + (state.query ? " Search again to see them." : "");
    } else if (state.generation === null && !state.query) {
      $("status").textContent = `${info.photos} photos in the library. Describe what you are looking for.`;
    }
    state.generation = info.generation;
  } catch (_) {
    // the server is restarting or gone; the next search will say so
  }
}

// -- wiring ----------------------------------------------------------------------------

function start() {
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    searchText($("q").value);
  });
  let typingTimer = null;
  $("q").addEventListener("input", () => {
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => {
      const text = $("q").value.trim();
      if (text.length >= 3 && text !== state.lastTyped) searchText(text);
    }, TYPE_PAUSE_MS);
  });
  for (const [id, which] of [["add-term", "add"], ["sub-term", "sub"]]) {
    $(id).addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      event.preventDefault();
      const text = event.target.value.trim();
      if (!text) return;
      event.target.value = "";
      addTerm(which, { kind: "text", text });
    });
  }
  for (const id of ["sort", "within", "literal"]) {
    $(id).addEventListener("change", () => {
      readOptions();
      search();
    });
  }
  $("reading-literal").addEventListener("click", () => {
    $("literal").checked = true;
    readOptions();
    search();
  });
  $("choose").addEventListener("change", (event) => searchImage(event.target.files[0]));
  $("more").addEventListener("click", () => search({ append: true }));
  $("f-apply").addEventListener("click", applyFilters);
  $("f-clear").addEventListener("click", () => {
    for (const id of ["f-in", "f-since", "f-until", "f-min-width", "f-min-height"]) $(id).value = "";
    applyFilters();
  });
  $("filters").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target.matches("input")) {
      event.preventDefault();
      applyFilters();
    }
  });
  $("view-search").addEventListener("click", () => {
    showView("search");
  });
  $("view-duplicates").addEventListener("click", loadDuplicates);
  $("view-map").addEventListener("click", loadMap);
  $("dup-go").addEventListener("click", loadDuplicates);
  $("detail-close").addEventListener("click", closeDetail);
  $("detail").addEventListener("click", (event) => {
    if (event.target === $("detail")) closeDetail();
  });
  $("detail-copy").addEventListener("click", async () => {
    const field = $("detail-path");
    try {
      await navigator.clipboard.writeText(field.value);
      $("detail-copy").textContent = "Copied";
    } catch (_) {
      field.select(); // no clipboard permission: selected, for Ctrl-C
    }
    setTimeout(() => ($("detail-copy").textContent = "Copy path"), 1500);
  });
  $("detail-like").addEventListener("click", () => {
    const result = detailResult;
    closeDetail();
    if (result) searchLike(result);
  });
  $("detail-unlike").addEventListener("click", () => {
    const result = detailResult;
    closeDetail();
    if (result) addTerm("sub", { kind: "photo", id: result.id, name: fileName(result.path) });
  });
  document.addEventListener("keydown", onKey);
  // Drop an image anywhere on the page to search with it.
  let dragDepth = 0;
  document.addEventListener("dragenter", (event) => {
    if (![...event.dataTransfer.types].includes("Files")) return;
    dragDepth += 1;
    $("drop").hidden = false;
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) $("drop").hidden = true;
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    $("drop").hidden = true;
    const file = [...event.dataTransfer.files].find((f) => f.type.startsWith("image/")) || event.dataTransfer.files[0];
    searchImage(file);
  });
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && state.more && !state.inflight) search({ append: true });
  }).observe($("more"));
  watchLibrary();
  setInterval(() => {
    if (!document.hidden) watchLibrary();
  }, 10000);
}

start();
