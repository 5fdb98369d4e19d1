// gaikan inspection station UI: plain JS, no dependencies, no network but this server.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  // Translations (static/i18n.js; English when it is absent): T(key, english, {vars}).
  const T = (k, en, v) => window.gaikanI18n ? window.gaikanI18n.t(k, en, v) : en.replace(/\{(\w+)\}/g, (_, n) => (v && n in v ? v[n] : ""));
  const SLIDER_MAX = 1000;
  const DECADES = 2; // the threshold slider spans model threshold ×/÷ 10^DECADES (log scale)

  const state = {
    model: null,         // GET /v1/model
    classifier: false,   // a classifier model: verdicts come from the server (the class)
    modelThreshold: null,
    threshold: null,     // current (slider) threshold
    results: [],         // {id, file, objectUrl, score, verdict, cls, confidence, probabilities,
                         //  map, overlayUrl, overlayBlob, error, card}
    selected: null,
    nextId: 1,
  };

  // ---------------------------------------------------------------- API + auth (static/api.js)
  const { api, errorText } = window.gaikanApi;

  function setStatus(text, isError) {
    const el = $("status");
    el.textContent = text || "";
    el.classList.toggle("error", Boolean(isError));
  }

  // ---------------------------------------------------------------- threshold
  function sliderToThreshold(v) {
    const t0 = state.modelThreshold;
    if (!(t0 > 0)) return t0 + (v - SLIDER_MAX / 2) / (SLIDER_MAX / 2) * Math.max(1, Math.abs(t0));
    const exp = ((v - SLIDER_MAX / 2) / (SLIDER_MAX / 2)) * DECADES;
    return t0 * Math.pow(10, exp);
  }

  function fmt(x) {
    if (x === null || x === undefined || !isFinite(x)) return "–";
    const a = Math.abs(x);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return x.toExponential(3);
    return Number(x.toPrecision(4)).toString();
  }

  function verdictOf(r) {
    if (r.error) return "error";
    if (r.score === null || r.score === undefined) return "pending";
    if (r.reviewVerdict) return r.reviewVerdict; // the operator's (review.js)
    if (state.classifier) return r.verdict === "ok" ? "ok" : "defect";
    return r.score > state.threshold ? "defect" : "ok";
  }

  // The colour bar of the overlays: the server's one colour policy, threshold marked.
  function drawLegend(colours) {
    const bar = $("legend-bar");
    if (!bar || !colours) return;
    const stops = colours.stops.map(([p, c]) => `rgb(${c.join(",")}) ${(p * 100).toFixed(1)}%`);
    bar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
    $("legend-mark").style.left = (colours.threshold_position * 100) + "%";
    $("legend-threshold").textContent = fmt(colours.threshold);
    $("legend-top").textContent = "≥ " + fmt(colours.threshold * colours.span);
  }

  function pct(p) {
    return isFinite(p) ? Math.round(100 * p) + "%" : "–";
  }

  function relabel() {
    $("threshold-value").textContent = fmt(state.threshold) +
      (state.threshold === state.modelThreshold ? T("station.model_suffix", " (model)") : "");
    for (const r of state.results) paintCard(r);
    updateSummary();
    if (state.selected) showDetails(state.selected);
  }

  // ---------------------------------------------------------------- cards
  const BADGE = {
    ok: () => T("station.badge_ok", "OK"),
    defect: () => T("station.badge_ng", "NG"),
    error: () => T("station.badge_error", "ERR"),
    pending: () => "…",
  };

  function makeCard(r) {
    const card = document.createElement("div");
    card.className = "card pending";
    card.tabIndex = 0;
    card.dataset.id = String(r.id);
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = r.file;
    img.src = r.objectUrl;
    img.addEventListener("error", () => { img.removeAttribute("src"); }, { once: true });
    const badge = document.createElement("span");
    badge.className = "badge";
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = r.file;
    name.title = r.file;
    const score = document.createElement("div");
    score.className = "score";
    card.append(img, badge, name, score);
    card.addEventListener("click", () => select(r));
    card.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") select(r); });
    r.card = card;
    r.thumb = img;
    paintCard(r);
    return card;
  }

  function paintCard(r) {
    const v = verdictOf(r);
    const card = r.card;
    card.classList.remove("ok", "defect", "error", "pending");
    card.classList.add(v);
    card.dataset.verdict = v;
    const badge = card.querySelector(".badge");
    badge.className = "badge " + v;
    badge.textContent = state.classifier && r.cls !== undefined && (v === "ok" || v === "defect")
      ? `${r.cls} ${pct(r.confidence)}` : BADGE[v]();
    const score = card.querySelector(".score");
    score.textContent = r.error ? T("station.card_error", "error")
      : (r.score === null ? T("station.inspecting", "inspecting…")
        : T("station.card_score", "score {score}", { score: fmt(r.score) }));
    card.title = r.error ? r.error : r.file;
    if (r.recordId !== undefined && !r.review && window.gaikanReview) mountReview(r);
  }

  // Review hook (static/review.js): Confirm / Override on each recorded result.
  function mountReview(r) {
    const el = r.card.appendChild(document.createElement("div"));
    r.review = window.gaikanReview.mount(el, { id: r.recordId, verdict: r.verdict }, {
      api: api,
      onDone: (rec) => {
        r.reviewVerdict = rec.review_verdict;
        paintCard(r);
        updateSummary();
        if (state.selected === r) showDetails(r);
      },
    });
  }

  function updateSummary() {
    const n = state.results.length;
    if (!n) { $("summary").textContent = T("station.no_images", "No images inspected yet."); return; }
    let ok = 0, ng = 0, err = 0, pend = 0;
    for (const r of state.results) {
      const v = verdictOf(r);
      if (v === "ok") ok++; else if (v === "defect") ng++; else if (v === "error") err++; else pend++;
    }
    $("summary").textContent =
      (n === 1 ? T("station.summary_one", "{n} image: {ok} OK, {ng} NG", { n, ok, ng })
        : T("station.summary", "{n} images: {ok} OK, {ng} NG", { n, ok, ng })) +
      (err ? (err === 1 ? T("station.summary_error_one", ", {n} error", { n: err })
        : T("station.summary_errors", ", {n} errors", { n: err })) : "") +
      (pend ? T("station.summary_pending", ", {n} in progress", { n: pend }) : "");
    $("download-csv").disabled = state.results.every((r) => verdictOf(r) === "pending");
  }

  // ---------------------------------------------------------------- viewer
  async function select(r) {
    state.selected = r;
    for (const c of document.querySelectorAll(".card.selected")) c.classList.remove("selected");
    r.card.classList.add("selected");
    $("viewer").classList.remove("empty");
    const shape = state.model ? state.model.image_shape : [1, 1];
    $("viewer-stage").style.aspectRatio = `${shape[1]} / ${shape[0]}`;
    const base = $("viewer-image");
    if (r.thumb.getAttribute("src")) base.src = r.objectUrl; else base.removeAttribute("src");
    const ov = $("viewer-overlay");
    ov.removeAttribute("src");
    ov.dataset.for = String(r.id);
    showDetails(r);
    if (r.error || r.score === null) return;
    try {
      const url = await overlayFor(r);
      if (state.selected === r && url) ov.src = url;
    } catch (e) {
      if (state.selected === r) setStatus(T("station.overlay_error", "Overlay: {message}", { message: e.message }), true);
    }
  }

  async function overlayFor(r) {
    if (r.overlayBlob) return r.overlayBlob;
    if (!r.overlayUrl) return null;
    const resp = await api(r.overlayUrl);
    if (!resp.ok) throw new Error(await errorText(resp));
    r.overlayBlob = URL.createObjectURL(await resp.blob());
    if (!r.thumb.getAttribute("src")) r.thumb.src = r.overlayBlob; // e.g. TIFF: browsers cannot show it
    return r.overlayBlob;
  }

  function showDetails(r) {
    const dl = $("viewer-details");
    dl.replaceChildren();
    const add = (k, v, cls) => {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      if (cls) dd.className = cls;
      dl.append(dt, dd);
    };
    add(T("station.d_file", "File"), r.file);
    const marker = $("viewer-marker");
    marker.hidden = true;
    if (r.error) { add(T("station.d_error", "Error"), r.error); return; }
    if (r.score === null) { add(T("station.d_status", "Status"), T("station.inspecting", "inspecting…")); return; }
    const v = verdictOf(r);
    add(T("station.d_verdict", "Verdict"), v === "defect" ? T("station.verdict_ng", "NG (defect)")
      : T("station.verdict_ok", "OK"), "verdict-" + v);
    if (state.classifier) {
      add(T("station.d_class", "Class"), r.cls, "verdict-" + v);
      add(T("station.d_confidence", "Confidence"), `${pct(r.confidence)} (${fmt(r.confidence)})`);
      add(T("station.d_probabilities", "Probabilities"), Object.entries(r.probabilities || {})
        .sort((a, b) => b[1] - a[1]).map(([k, p]) => `${k} ${pct(p)}`).join(" · "));
      add(T("station.d_score", "Score"), fmt(r.score) + (state.model.good_class !== null
        ? ` (1 − P(${state.model.good_class}))` : T("station.confidence_suffix", " (confidence)")));
    } else {
      add(T("station.d_score", "Score"), fmt(r.score));
      add(T("station.d_threshold", "Threshold"), fmt(state.threshold) +
        (state.threshold === state.modelThreshold ? T("station.model_suffix", " (model)") : ""));
    }
    add(T("station.d_map", "Map max / mean"), fmt(r.map.max) + " / " + fmt(r.map.mean));
    add(T("station.d_peak", "Hottest point"), T("station.peak_value", "row {row}, col {col} (image pixels)",
      { row: r.map.peak.row, col: r.map.peak.col }));
    const [h, w] = r.map.shape;
    marker.style.left = ((r.map.peak.col + 0.5) / w * 100) + "%";
    marker.style.top = ((r.map.peak.row + 0.5) / h * 100) + "%";
    marker.hidden = v !== "defect";
  }

  function applyOpacity() {
    $("viewer-overlay").style.opacity = String(Number($("opacity").value) / 100);
  }

  // ---------------------------------------------------------------- upload
  function batches(files) {
    const lim = state.model ? state.model.limits : { max_files: 16, max_upload_bytes: 32 << 20 };
    const maxFiles = Math.min(16, lim.max_files);
    const maxBytes = lim.max_upload_bytes * 0.9;
    const out = [];
    let cur = [], bytes = 0;
    for (const f of files) {
      if (cur.length && (cur.length >= maxFiles || bytes + f.size > maxBytes)) {
        out.push(cur); cur = []; bytes = 0;
      }
      cur.push(f); bytes += f.size;
    }
    if (cur.length) out.push(cur);
    return out;
  }

  async function inspectFiles(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length) return;
    if (!state.model) await modelReady;
    if (!state.model) { setStatus(T("station.model_missing", "The model is not available; reload the page."), true); return; }
    const lim = state.model ? state.model.limits.max_upload_bytes : Infinity;
    const entries = files.map((f) => {
      const r = { id: state.nextId++, file: f.name || "image", objectUrl: URL.createObjectURL(f),
                  score: null, error: null, map: null, overlayUrl: null, overlayBlob: null };
      if (f.size > lim) r.error = T("station.too_large", "{file}: larger than the server's upload limit", { file: r.file });
      state.results.push(r);
      $("results").append(makeCard(r));
      return [f, r];
    });
    updateSummary();
    const todo = entries.filter(([, r]) => !r.error);
    const groups = batches(todo.map(([f]) => f));
    let k = 0;
    for (const group of groups) {
      const rs = todo.slice(k, k + group.length).map(([, r]) => r);
      k += group.length;
      setStatus(rs.length === 1 ? T("station.inspecting_one", "Inspecting {n} image…", { n: 1 })
        : T("station.inspecting_n", "Inspecting {n} images…", { n: rs.length }));
      const form = new FormData();
      for (const f of group) form.append("files", f, f.name);
      try {
        const resp = await api("/v1/inspect?alpha=1", { method: "POST", body: form });
        if (!resp.ok) throw new Error(await errorText(resp));
        const body = await resp.json();
        body.results.forEach((res, i) => {
          const r = rs[i];
          if (!r) return;
          if (res.error) { r.error = res.error; return; }
          r.score = res.score;
          r.verdict = res.verdict;
          if (res.id !== undefined) r.recordId = res.id;
          r.cls = res.class;
          r.confidence = res.confidence;
          r.probabilities = res.probabilities;
          r.map = res.map;
          r.overlayUrl = res.overlay_url || null;
          if (res.overlay) r.overlayBlob = res.overlay;
        });
        setStatus("");
      } catch (e) {
        for (const r of rs) if (r.score === null) r.error = e.message;
        setStatus(e.message, true);
      }
      for (const r of rs) paintCard(r);
      updateSummary();
      if (!state.selected || state.selected === rs[0] || rs.includes(state.selected)) {
        const pick = rs.find((r) => verdictOf(r) === "defect") || rs.find((r) => !r.error) || rs[0];
        if (pick) select(pick);
      }
    }
  }

  // ---------------------------------------------------------------- CSV
  function csvField(v) {
    const s = v === null || v === undefined ? "" : String(v);
    // Quote always; neutralise spreadsheet formulas in file names.
    const safe = /^[=+\-@\t\r]/.test(s) && isNaN(Number(s)) ? "'" + s : s;
    return '"' + safe.replace(/"/g, '""') + '"';
  }

  function downloadCsv() {
    const head = state.classifier
      ? ["file", "verdict", "class", "confidence", "score", "map_max", "map_mean",
         "peak_row", "peak_col", "error"]
      : ["file", "verdict", "score", "threshold", "model_verdict", "model_threshold",
         "map_max", "map_mean", "peak_row", "peak_col", "error"];
    const rows = [head.join(",")];
    for (const r of state.results) {
      const v = verdictOf(r);
      if (v === "pending") continue;
      const m = r.map || { peak: {} };
      const tail = [m.max, m.mean, m.peak.row, m.peak.col, r.error];
      let row;
      if (state.classifier) {
        row = [r.file, v, r.cls, r.confidence, r.score].concat(tail);
      } else {
        const modelV = r.error ? "" : (r.score > state.modelThreshold ? "defect" : "ok");
        row = [r.file, v, r.score, state.threshold, modelV, state.modelThreshold].concat(tail);
      }
      rows.push(row.map(csvField).join(","));
    }
    const blob = new Blob([rows.join("\r\n") + "\r\n"], { type: "text/csv" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "gaikan-results.csv";
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  // ---------------------------------------------------------------- wiring
  async function loadModel() {
    try {
      const resp = await api("/v1/model");
      if (!resp.ok) throw new Error(await errorText(resp));
      const m = await resp.json();
      state.model = m;
      state.classifier = m.kind === "classifier";
      state.modelThreshold = m.threshold;
      drawLegend(m.colours);
      state.threshold = m.threshold;
      renderModelInfo();
      // The threshold slider re-labels anomaly scores; a classifier's verdict is its class.
      $("threshold-box").hidden = state.classifier;
      $("threshold-reset").hidden = state.classifier;
      const slider = $("threshold");
      slider.value = String(SLIDER_MAX / 2);
      slider.disabled = state.classifier;
      $("threshold-reset").disabled = state.classifier;
      $("history-link").hidden = $("models-link").hidden = $("reviewer-slot").hidden = !m.record;
      if (m.record && window.gaikanReview) window.gaikanReview.mountReviewer($("reviewer-slot"), { api: api });
      document.body.dataset.ready = "1";
      relabel();
    } catch (e) {
      const info = $("model-info");
      info.dataset.i18n = "station.model_unavailable"; // kept by a later language switch
      info.dataset.i18nEn = "model unavailable";
      info.textContent = T("station.model_unavailable", "model unavailable");
      setStatus(T("station.model_unreachable", "Cannot reach the model: {message}", { message: e.message }), true);
    }
  }

  function renderModelInfo() {
    const m = state.model;
    if (!m) return;
    const [h, w] = m.image_shape;
    delete $("model-info").dataset.i18n; // drawn here, not by i18n.apply
    $("model-info").textContent = state.classifier
      ? T("station.model_classifier", "classifier · {h}×{w} px · classes {classes}",
        { h, w, classes: m.classes.join(", ") }) + " · " +
        (m.good_class !== null ? T("station.model_good", "OK = {good}", { good: m.good_class })
          : T("station.model_no_good", "no good class: every part NG")) +
        (m.model_file ? ` · ${m.model_file}` : "")
      : T("station.model_detector", "{detector} · {h}×{w} px · threshold {threshold} · {n} good images",
        { detector: m.detector, h, w, threshold: fmt(m.threshold), n: m.n_train ?? "?" }) +
        (m.model_file ? ` · ${m.model_file}` : "");
  }

  // The translations arrived (or the language was switched): redraw the JS-made strings.
  document.addEventListener("gaikan-i18n-ready", () => {
    renderModelInfo();
    if (state.model) relabel(); else updateSummary();
  });

  function wire() {
    const zone = $("drop-zone");
    const input = $("file-input");
    input.addEventListener("change", () => { inspectFiles(input.files); input.value = ""; });
    zone.addEventListener("keydown", (ev) => { if (ev.key === "Enter") input.click(); });
    for (const ev of ["dragenter", "dragover"]) {
      zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.add("over"); });
    }
    for (const ev of ["dragleave", "drop"]) {
      zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.remove("over"); });
    }
    zone.addEventListener("drop", (e) => inspectFiles(e.dataTransfer && e.dataTransfer.files));
    // Dropping a file elsewhere must not navigate away from the station.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());

    $("threshold").addEventListener("input", (e) => {
      state.threshold = Number(e.target.value) === SLIDER_MAX / 2
        ? state.modelThreshold : sliderToThreshold(Number(e.target.value));
      relabel();
    });
    $("threshold-reset").addEventListener("click", () => {
      $("threshold").value = String(SLIDER_MAX / 2);
      state.threshold = state.modelThreshold;
      relabel();
    });
    $("opacity").addEventListener("input", applyOpacity);
    $("download-csv").addEventListener("click", downloadCsv);
    $("clear").addEventListener("click", () => {
      for (const r of state.results) {
        URL.revokeObjectURL(r.objectUrl);
        if (r.overlayBlob && r.overlayBlob.startsWith("blob:")) URL.revokeObjectURL(r.overlayBlob);
      }
      state.results = [];
      state.selected = null;
      $("results").replaceChildren();
      $("viewer").classList.add("empty");
      $("viewer-image").removeAttribute("src");
      $("viewer-overlay").removeAttribute("src");
      $("viewer-details").replaceChildren();
      $("viewer-marker").hidden = true;
      updateSummary();
    });
    applyOpacity();
  }

  wire();
  const modelReady = loadModel();
})();
