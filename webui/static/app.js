// Search page: words, images (pick, drop, paste), audio files and microphone recordings
// combine into one query sent to POST /api/search. No framework, no CDN.

const $ = (sel) => document.querySelector(sel);
const app = $("#app");
const limits = JSON.parse(app.dataset.limits);
const form = $("#search-form");
const box = $("#q");
const chips = $("#inputs");
const results = $("#results");
const message = $("#message");
const heard = $("#heard");
const panel = $("#results-panel");
const moreButton = $("#load-more");
const tabs = [...document.querySelectorAll('[role="tab"]')];
const hybridBox = $("#hybrid"); // "Keywords": hybrid search (full-text matches fused with the vector hits)

const state = {
  inputs: [], // {uid, kind: "image"|"audio"|"item", blob?, name, url?, itemId?, seconds?, negative?}
  target: "all",
  nextOffset: null,
  lastQuery: null, // what produced the results on screen (for "load more")
  controller: null,
  stats: null,
};
let uidCounter = 0;

// ---------------------------------------------------------------- helpers
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function clock(seconds) {
  const s = Math.max(0, seconds || 0);
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
}

function markedText(text, marks) {
  // text with <mark> around the [start, end) ranges; built from text nodes, never innerHTML
  const frag = document.createDocumentFragment();
  let pos = 0;
  for (const [a, b] of marks || []) {
    if (a < pos) continue;
    frag.append(text.slice(pos, a), el("mark", { text: text.slice(a, b) }));
    pos = b;
  }
  frag.append(text.slice(pos));
  return frag;
}

function say(text, kind = "info", hint = null) {
  message.className = `message ${kind}`;
  message.replaceChildren(text);
  if (hint) message.append(el("span", { class: "hint", text: hint }));
}

function kindOf(file) {
  const t = (file.type || "").toLowerCase();
  if (t.startsWith("image/")) return "image";
  if (t.startsWith("audio/") || t === "video/webm" || t === "video/ogg") return "audio";
  const ext = (file.name || "").toLowerCase().split(".").pop();
  if (["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"].includes(ext)) return "image";
  if (["wav", "flac", "mp3", "ogg", "opus", "oga", "m4a", "aac", "webm"].includes(ext)) return "audio";
  return null;
}

// ---------------------------------------------------------------- inputs (chips)
function addFile(file, name = file.name, extra = {}) {
  const kind = kindOf(file);
  if (!kind) {
    say(`“${name || "That file"}” is not an image or an audio file.`, "error",
      "Images: JPEG, PNG, WebP, GIF, BMP, TIFF. Audio: WAV, FLAC, MP3, OGG, M4A, WebM.");
    return false;
  }
  if (file.size > limits.maxBytes) {
    say(`“${name}” is ${(file.size / 1e6).toFixed(1)} MB; the limit is ${limits.maxBytes / 1e6} MB.`, "error");
    return false;
  }
  if (state.inputs.length + (box.value.trim() ? 1 : 0) >= limits.maxInputs) {
    say(`A query combines at most ${limits.maxInputs} inputs; remove one first.`, "error");
    return false;
  }
  state.inputs.push({ uid: ++uidCounter, kind, blob: file, name: name || `${kind} file`, url: URL.createObjectURL(file), ...extra });
  renderChips();
  return true;
}

function addItem(itemId, name) {
  state.inputs = state.inputs.filter((i) => !(i.kind === "item" && i.itemId === itemId));
  state.inputs.push({ uid: ++uidCounter, kind: "item", itemId, name: name || `item ${itemId}` });
  renderChips();
}

function removeInput(uid) {
  const i = state.inputs.findIndex((x) => x.uid === uid);
  if (i < 0) return;
  const [gone] = state.inputs.splice(i, 1);
  if (gone.url) URL.revokeObjectURL(gone.url);
  renderChips();
  const next = chips.querySelectorAll(".remove")[Math.min(i, state.inputs.length - 1)];
  (next || box).focus();
}

function toggleNegative(uid) {
  const inp = state.inputs.find((x) => x.uid === uid);
  if (!inp) return;
  inp.negative = !inp.negative;
  renderChips();
  chips.querySelector(`[data-uid="${uid}"] .not-this`)?.focus();
  if (hasQuery()) runSearch();
}

function renderChips() {
  chips.replaceChildren(...state.inputs.map((inp) => {
    let preview;
    if (inp.kind === "image") preview = el("img", { src: inp.url, alt: "" });
    else if (inp.kind === "audio") preview = el("audio", { src: inp.url, controls: true, preload: "metadata", "aria-label": `Play ${inp.name}` });
    else preview = el("span", { class: "icon", "aria-hidden": "true", text: "≈" });
    const label = inp.kind === "item" ? `${inp.negative ? "Not like" : "Like"}: ${inp.name}` : inp.name;
    return el("li", { class: `chip chip-${inp.kind}${inp.negative ? " negative" : ""}`, "data-kind": inp.kind, "data-uid": inp.uid },
      preview,
      el("span", { class: "label", title: label, text: label }),
      el("button", {
        // "not this": the input pushes similar items down instead of pulling them up
        type: "button", class: "not-this", "aria-pressed": inp.negative ? "true" : "false",
        "aria-label": `Not this: push results like ${inp.name} down`, title: "Not this: push similar results down",
        text: "not this",
        onclick: () => toggleNegative(inp.uid),
      }),
      el("button", {
        type: "button", class: "remove", "aria-label": `Remove ${label} from the query`, text: "×",
        onclick: () => removeInput(inp.uid),
        onkeydown: (e) => { if (e.key === "Backspace" || e.key === "Delete") { e.preventDefault(); removeInput(inp.uid); } },
      }));
  }));
}

$("#pick-image").addEventListener("click", () => $("#image-file").click());
$("#pick-audio").addEventListener("click", () => $("#audio-file").click());
for (const id of ["#image-file", "#audio-file"]) {
  $(id).addEventListener("change", (e) => {
    const files = [...e.target.files];
    e.target.value = "";
    if (files.map((f) => addFile(f)).some(Boolean)) runSearch();
  });
}

// paste an image (screenshot, copied picture) anywhere on the page
document.addEventListener("paste", (e) => {
  const files = [...(e.clipboardData?.files || [])].filter((f) => kindOf(f));
  if (!files.length) return;
  e.preventDefault();
  files.forEach((f, i) => addFile(f, f.name && f.name !== "image.png" ? f.name : `pasted image ${i + 1}`));
  runSearch();
});

// drop files anywhere on the page
const overlay = $("#drop-overlay");
let dragDepth = 0;
const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes("Files");
window.addEventListener("dragenter", (e) => { if (hasFiles(e)) { dragDepth++; overlay.hidden = false; } });
window.addEventListener("dragleave", (e) => { if (hasFiles(e) && --dragDepth <= 0) { dragDepth = 0; overlay.hidden = true; } });
window.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
window.addEventListener("drop", (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  dragDepth = 0;
  overlay.hidden = true;
  if ([...e.dataTransfer.files].map((f) => addFile(f)).some(Boolean)) runSearch();
});

// ---------------------------------------------------------------- microphone
const rec = { recorder: null, stream: null, chunks: [], started: 0, raf: 0, audioCtx: null, cancelled: false, searchAfter: true };
const recordButton = $("#record");
const recorderPanel = $("#recorder");

async function startRecording() {
  if (!navigator.mediaDevices?.getUserMedia || typeof MediaRecorder === "undefined") {
    say("This browser cannot record here.", "error",
      "Recording needs a secure page (https:// or http://localhost) in a current browser; or pick an audio file instead.");
    return;
  }
  try {
    rec.stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
  } catch (err) {
    const denied = err && (err.name === "NotAllowedError" || err.name === "SecurityError");
    say(denied ? "Microphone access was refused." : `No microphone available (${err && err.name}).`, "error",
      denied ? "Allow the microphone for this site in the browser's address bar, then press Record again." : "Connect a microphone, or pick an audio file instead.");
    return;
  }
  const types = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4", "audio/webm"];
  const mimeType = types.find((t) => MediaRecorder.isTypeSupported?.(t));
  rec.recorder = new MediaRecorder(rec.stream, mimeType ? { mimeType } : undefined);
  rec.chunks = [];
  rec.cancelled = false;
  rec.recorder.addEventListener("dataavailable", (e) => { if (e.data.size) rec.chunks.push(e.data); });
  rec.recorder.addEventListener("stop", finishRecording);
  rec.recorder.start(250);
  rec.started = performance.now();

  // level meter: RMS of the microphone signal
  rec.audioCtx = new AudioContext();
  const analyser = rec.audioCtx.createAnalyser();
  analyser.fftSize = 1024;
  rec.audioCtx.createMediaStreamSource(rec.stream).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  const level = $("#rec-level");
  const meter = $("#rec-meter");
  meter.dataset.peak = "0";
  const timer = $("#rec-time");
  const tick = () => {
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const v of buf) sum += v * v;
    const rms = Math.sqrt(sum / buf.length);
    const pct = Math.min(100, Math.round(Math.sqrt(rms) * 160));
    level.style.width = `${pct}%`;
    meter.setAttribute("aria-valuenow", String(pct));
    meter.dataset.peak = String(Math.max(pct, parseInt(meter.dataset.peak || "0", 10)));
    const secs = (performance.now() - rec.started) / 1000;
    timer.textContent = clock(secs);
    if (secs >= limits.maxAudioSeconds - 0.5) { stopRecording(true); return; }
    rec.raf = requestAnimationFrame(tick);
  };
  rec.raf = requestAnimationFrame(tick);
  recorderPanel.hidden = false;
  recordButton.setAttribute("aria-pressed", "true");
  recordButton.disabled = true;
  say("Listening… speak your query, then press “Stop and search”.");
  $("#rec-stop").focus();
}

function stopRecording(search = true) {
  if (!rec.recorder || rec.recorder.state === "inactive") return;
  rec.searchAfter = search;
  cancelAnimationFrame(rec.raf);
  rec.recorder.stop();
}

function cancelRecording() {
  rec.cancelled = true;
  stopRecording(false);
}

function finishRecording() {
  const seconds = (performance.now() - rec.started) / 1000;
  rec.stream?.getTracks().forEach((t) => t.stop());
  rec.audioCtx?.close();
  recorderPanel.hidden = true;
  recordButton.removeAttribute("aria-pressed");
  recordButton.disabled = false;
  $("#rec-level").style.width = "0";
  $("#rec-meter").setAttribute("aria-valuenow", "0");
  if (rec.cancelled) { say("Recording discarded."); recordButton.focus(); return; }
  const type = rec.recorder.mimeType || "audio/webm";
  const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
  const blob = new Blob(rec.chunks, { type });
  const file = new File([blob], `recording.${ext}`, { type });
  if (addFile(file, `Recording ${clock(seconds)}`, { seconds }) && rec.searchAfter) runSearch();
  box.focus();
}

recordButton.addEventListener("click", startRecording);
$("#rec-stop").addEventListener("click", () => stopRecording(true));
$("#rec-cancel").addEventListener("click", cancelRecording);

// ---------------------------------------------------------------- tabs
function selectTab(tab, search = true) {
  tabs.forEach((t) => {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
  });
  panel.setAttribute("aria-labelledby", tab.id);
  state.target = tab.dataset.target;
  if (search && hasQuery()) runSearch();
}
tabs.forEach((tab, i) => {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (e) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
    if (e.key === "Home" || e.key === "End" || step) {
      e.preventDefault();
      const next = e.key === "Home" ? tabs[0] : e.key === "End" ? tabs.at(-1) : tabs[(i + step + tabs.length) % tabs.length];
      next.focus();
      selectTab(next);
    }
  });
});

// ---------------------------------------------------------------- search
function hasQuery() {
  return box.value.trim() !== "" || state.inputs.length > 0;
}

function currentQuery() {
  return { text: box.value.trim(), inputs: [...state.inputs], target: state.target, hybrid: hybridBox.checked };
}

function requestFor(query, offset) {
  const files = query.inputs.filter((i) => i.blob);
  const items = query.inputs.filter((i) => i.kind === "item" && !i.negative).map((i) => i.itemId);
  const notItems = query.inputs.filter((i) => i.kind === "item" && i.negative).map((i) => i.itemId);
  if (!files.length) {
    const body = { target: query.target, k: limits.k, offset };
    if (query.text) body.text = query.text;
    if (items.length) body.items = items;
    if (notItems.length) body.not_items = notItems;
    if (query.hybrid) body.hybrid = true;
    return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  }
  const fd = new FormData();
  if (query.text) fd.append("text", query.text);
  items.forEach((id) => fd.append("item", String(id)));
  notItems.forEach((id) => fd.append("not_item", String(id)));
  files.forEach((f) => fd.append(f.negative ? "not_file" : "file", f.blob, f.blob.name || f.name));
  fd.append("target", query.target);
  fd.append("k", String(limits.k));
  fd.append("offset", String(offset));
  if (query.hybrid) fd.append("hybrid", "1");
  return { method: "POST", body: fd };
}

function syncUrl(query) {
  // words and "more like this" are shareable; uploaded files and recordings are not
  const params = new URLSearchParams();
  if (query.text) params.set("q", query.text);
  const items = query.inputs.filter((i) => i.kind === "item" && !i.negative);
  if (items.length === 1) params.set("like", String(items[0].itemId));
  if (query.target !== "all") params.set("target", query.target);
  if (query.hybrid) params.set("kw", "1");
  const url = params.toString() ? `?${params}` : location.pathname;
  if (url === location.search || (url === location.pathname && !location.search)) return;
  history.pushState(null, "", url); // Back returns to the previous query (popstate below)
}

async function runSearch({ append = false } = {}) {
  const query = append ? state.lastQuery : currentQuery();
  if (!query || (!query.text && !query.inputs.length)) {
    say("Type some words, add an image or an audio file, or record a question.", "error");
    box.focus();
    return;
  }
  if (query.text.length > limits.maxTextChars) {
    say(`The text is ${query.text.length} characters; the limit is ${limits.maxTextChars}.`, "error");
    return;
  }
  state.controller?.abort();
  const controller = new AbortController();
  state.controller = controller;
  const offset = append ? state.nextOffset : 0;
  panel.setAttribute("aria-busy", "true");
  moreButton.disabled = true;
  if (!append) say(query.inputs.some((i) => i.kind === "audio") ? "Listening to the audio and searching…" : "Searching…");
  const t0 = performance.now();
  let res, data;
  try {
    res = await fetch("/api/search", { ...requestFor(query, offset), signal: controller.signal });
    data = await res.json().catch(() => null);
  } catch (err) {
    if (err.name === "AbortError") return;
    say("The server cannot be reached.", "error", "Check that `python -m webui` is still running, then try again.");
    panel.setAttribute("aria-busy", "false");
    return;
  } finally {
    if (state.controller === controller) moreButton.disabled = false;
  }
  if (state.controller !== controller) return;
  panel.setAttribute("aria-busy", "false");
  if (!res.ok || !data || data.error) {
    const msg = data?.error?.message || `The server answered ${res.status}.`;
    say(msg, "error", hintFor(data?.error?.code));
    if (!append) { results.replaceChildren(); heard.hidden = true; moreButton.hidden = true; }
    return;
  }
  state.lastQuery = query;
  state.nextOffset = data.next_offset;
  if (!append) syncUrl(query);
  render(data, append, performance.now() - t0);
}

function hintFor(code) {
  return {
    not_indexed: null,
    unsupported_modality: "Search with words or audio instead, or index with a model that has an image encoder.",
    no_speech: null,
    too_large: "Use a smaller or shorter file.",
    unsupported_type: null,
    undecodable: "The file may be damaged; try another one.",
  }[code] ?? null;
}

function render(data, append, ms) {
  const spoken = data.query.inputs.filter((i) => i.transcript);
  heard.hidden = !spoken.length;
  if (spoken.length) heard.replaceChildren("Heard: ", ...spoken.flatMap((s, i) => [i ? ", " : "", el("q", { text: s.transcript })]));
  const cards = data.hits.map(hitCard);
  if (append) results.append(...cards);
  else results.replaceChildren(...cards);
  moreButton.hidden = !data.has_more;
  const shown = results.children.length;
  if (!shown) {
    const where = { all: "anything", image: "images", audio: "audio", text: "text", video: "videos" }[data.target];
    const none = state.stats && data.target !== "all" && !state.stats.items[data.target];
    say(none ? `No ${where} is indexed.` : `Nothing found in ${where}.`, "info",
      none ? "Switch to All, or index some with `python -m indexer add PATH`." : "Try other words, or switch to All.");
  } else {
    say(`${shown}${data.has_more ? "+" : ""} result${shown === 1 ? "" : "s"} · ${Math.round(ms)} ms`, "info",
      (data.notices || [])[0] || null); // e.g. photographs in an index of the pictogram model
  }
  if (append && cards[0]) cards[0].querySelector("a")?.focus();
}

function hitCard(hit) {
  const page = `/items/${hit.id}`;
  const li = el("li", { class: `card hit ${hit.modality}`, "data-id": hit.id, "data-modality": hit.modality, "data-path": hit.path });
  if (hit.modality === "video") { // the keyframe of the matched second
    li.append(el("a", { class: "thumb", href: page + (hit.start ? `?t=${hit.start}` : ""), tabindex: "-1", "aria-hidden": "true" },
      el("img", { src: `/api/items/${hit.id}/thumbnail`, alt: `${hit.name} at ${clock(hit.start)}`, loading: "lazy", decoding: "async" })));
  }
  if (hit.modality === "image") {
    const thumb = `/api/items/${hit.id}/thumbnail`;
    li.append(el("a", { class: "thumb", href: page, tabindex: "-1", "aria-hidden": "true" },
      el("img", { src: `${thumb}?size=256`, srcset: `${thumb}?size=256 1x, ${thumb}?size=512 2x`, alt: hit.name, loading: "lazy", decoding: "async" })));
  }
  const body = el("div", { class: "body" });
  const when = hit.start !== undefined && (hit.modality === "audio" || hit.modality === "video") ? el("span", { class: "when", text: `${clock(hit.start)}–${clock(hit.end)}` }) : null;
  const view = hit.view ? el("span", { class: `badge badge-view`, title: "What matched: what is shown, what is said, or both", text: { frame: "shown", speech: "said", both: "shown + said" }[hit.view] }) : null;
  const pct = Math.max(0, Math.min(100, Math.round(hit.score * 100)));
  const fill = el("span");
  fill.style.width = `${pct}%`; // CSSOM, allowed by the page's CSP (inline style attributes are not)
  body.append(
    el("a", { class: "name", href: page + (hit.start ? `?t=${hit.start}` : ""), title: hit.path }, markedText(hit.name, hit.name_marks)),
    el("div", { class: "meta" },
      el("span", { class: `badge badge-${hit.modality}`, text: hit.modality }),
      when, view,
      el("span", { class: "score", title: hit.ranks ? "Fused rank score (reciprocal rank fusion of meaning and keywords)" : `Relevance, comparable across tabs and query kinds (similarity ${hit.similarity.toFixed(3)})` },
        el("span", { class: "scorebar", "aria-hidden": "true" }, fill),
        el("span", { class: "value", text: hit.score.toFixed(3) }))),
  );
  if (hit.modality === "video") { // a player that starts at the matched second (#t= and, once loaded, currentTime)
    const start = hit.start || 0;
    const video = el("video", { controls: true, preload: "metadata", playsinline: true, class: "hit-video",
      src: `/api/items/${hit.id}/media#t=${start}`, "aria-label": `Play ${hit.name} from ${clock(start)}` });
    video.addEventListener("loadedmetadata", () => { if (Math.abs(video.currentTime - start) > 0.5) video.currentTime = start; }, { once: true });
    body.append(video);
  }
  if (hit.modality === "audio") {
    const start = hit.start || 0;
    const audio = el("audio", { controls: true, preload: "none", src: `/api/items/${hit.id}/media#t=${start}`, "aria-label": `Play ${hit.name} from ${clock(start)}` });
    audio.addEventListener("play", () => {
      if (!audio.dataset.seeked) { audio.dataset.seeked = "1"; if (Math.abs(audio.currentTime - start) > 0.5) audio.currentTime = start; }
    });
    body.append(audio);
  }
  if (hit.text) body.append(el("p", { class: "snippet" }, markedText(hit.text, hit.marks)));
  if (hit.matched?.length) body.append(el("p", { class: "matched", text: `Keywords: ${hit.matched.join(", ")}` }));
  body.append(el("div", { class: "actions" },
    el("button", { type: "button", class: "small more-like", onclick: () => moreLikeThis(hit) }, "More like this"),
    el("a", { class: "button small ghost", href: page }, "Details")));
  li.append(body);
  return li;
}

function moreLikeThis(hit) {
  state.inputs.forEach((i) => i.url && URL.revokeObjectURL(i.url));
  state.inputs = [];
  box.value = "";
  addItem(hit.id, hit.name);
  runSearch();
  window.scrollTo({ top: 0, behavior: "smooth" });
}

form.addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });
hybridBox.addEventListener("change", () => { if (hasQuery()) runSearch(); });
moreButton.addEventListener("click", () => runSearch({ append: true }));

// ---------------------------------------------------------------- keyboard
document.addEventListener("keydown", (e) => {
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName) || document.activeElement?.isContentEditable;
  if (e.key === "/" && !typing && !e.ctrlKey && !e.metaKey) { e.preventDefault(); box.focus(); box.select(); }
  if (e.key === "Escape" && rec.recorder && rec.recorder.state !== "inactive") { e.preventDefault(); cancelRecording(); }
});

// ---------------------------------------------------------------- first view
async function welcome() {
  let stats = null;
  try {
    const r = await fetch("/api/stats");
    stats = r.ok ? await r.json() : null;
  } catch { /* the message below still helps */ }
  state.stats = stats;
  if (stats) {
    for (const [m, n] of Object.entries(stats.items)) {
      const c = document.querySelector(`[data-count="${m}"]`);
      if (c) c.textContent = n ? String(n) : "";
    }
  }
  if (stats && stats.indexed && !(stats.modalities || []).includes("image")) {
    const pick = $("#pick-image");
    pick.disabled = true;
    pick.title = `The model ${stats.model} has no image encoder, so images cannot be part of a query`;
  }
  if (hasQuery() || results.children.length) return;
  if (!stats) { say("Cannot read the index status.", "error", "Check that the server can reach its catalog database."); return; }
  if (!stats.indexed) {
    results.replaceChildren(el("li", { class: "empty" }, el("h2", { text: "Nothing is indexed yet" }),
      el("p", { text: "Index a folder of images, recordings and notes, then reload this page:" }),
      el("pre", {}, el("code", { text: `python -m indexer add PATH --data-dir ${stats.data_dir}` }))));
    say("");
    return;
  }
  const parts = [["image", "images"], ["audio", "audio segments"], ["text", "text passages"], ["video", "video segments"]]
    .filter(([m]) => stats.items[m]).map(([m, label]) => `${stats.items[m].toLocaleString()} ${label}`);
  const canImage = (stats.modalities || []).includes("image");
  results.replaceChildren(el("li", { class: "empty" },
    el("h2", { text: "Search by words, pictures or voice" }),
    el("p", { text: `Searching ${parts.join(", ")}.` }),
    el("p", { class: "muted", text: canImage
      ? "Type a phrase, drop or paste an image, pick an audio file, or press Record and ask out loud."
      : `Type a phrase, pick an audio file, or press Record and ask out loud. (The model ${stats.model} has no image encoder, so image queries are refused.)` })));
  say("");
}

function fromUrl() {
  const params = new URLSearchParams(location.search);
  const target = params.get("target") || "all";
  selectTab(tabs.find((t) => t.dataset.target === target) || tabs[0], false);
  box.value = params.get("q") || "";
  hybridBox.checked = params.get("kw") === "1";
  state.inputs.forEach((i) => i.url && URL.revokeObjectURL(i.url));
  state.inputs = [];
  const like = parseInt(params.get("like") || "", 10);
  if (like > 0) {
    addItem(like, `item ${like}`);
    fetch(`/api/items/${like}`).then((r) => (r.ok ? r.json() : null)).then((item) => {
      const chip = item && state.inputs.find((i) => i.kind === "item" && i.itemId === like);
      if (chip) { chip.name = item.name; renderChips(); }
    }).catch(() => {});
  } else {
    renderChips();
  }
  if (hasQuery()) runSearch();
  else { results.replaceChildren(); moreButton.hidden = true; heard.hidden = true; }
}

window.addEventListener("popstate", () => { fromUrl(); if (!hasQuery()) welcome(); });

fromUrl();
welcome();
if (!hasQuery()) box.focus();
