// gaikan history dashboard: recorded inspections, yield per hour/shift, a Shewhart chart of the
// image scores and defect classes over time.  Plain JS and inline SVG, no dependencies.
"use strict";

(function () {
  const T = (k, en, v) => window.gaikanI18n ? window.gaikanI18n.t(k, en, v) : en.replace(/\{(\w+)\}/g, (_, n) => (v && n in v ? v[n] : ""));
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const PAGE = 25;          // table rows per page
  const CONTROL_POINTS = 200; // most recent scores in the control chart
  const POLL_MS = 5000;
  const CHART_MS = 10000;      // charts at most this often when records changed
  const CHART_IDLE_MS = 60000; // and at least this often
  const DEFAULT_RANGE_MS = 24 * 3600 * 1000; // charts without a time filter: the last 24 h

  const state = {
    model: null,
    control: null,
    offset: 0,
    total: 0,
    items: [],
    filters: {},
    thumbs: new Map(),   // record id -> object URL (or "" when not available)
    notes: new Map(),    // "id@reviewed_at" -> the latest review's note
    lastKey: "",         // what the table shows (ids + review state), to skip needless redraws
    busy: false,
    seq: 0,              // the latest refresh
    dataKey: "",         // the table's records and total, to tell when the charts are stale
    chartsAt: 0,         // when the charts were last drawn (ms)
    chartsStale: false,  // records changed since
    recording: true,
    started: false,      // the model is loaded and the first refresh asked for (see refresh)
  };

  // ---------------------------------------------------------------- API + auth (static/api.js)
  const { api } = window.gaikanApi;

  async function getJson(path) {
    const resp = await api(path);
    if (!resp.ok) {
      let text = resp.status + " " + resp.statusText;
      try { text = (await resp.json()).error || text; } catch (e) { /* not JSON */ }
      const err = new Error(text);
      err.status = resp.status;
      throw err;
    }
    return resp.json();
  }

  function setStatus(text, isError) {
    const el = $("status");
    el.textContent = text || "";
    el.classList.toggle("error", Boolean(isError));
  }

  // ---------------------------------------------------------------- formatting
  function fmt(x) {
    if (x === null || x === undefined || !isFinite(x)) return "–";
    const a = Math.abs(x);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return x.toExponential(3);
    return Number(x.toPrecision(4)).toString();
  }
  const pct = (p) => (p === null || p === undefined || !isFinite(p) ? "–" : (100 * p).toFixed(1) + "%");
  const two = (n) => String(n).padStart(2, "0");
  function timeText(iso, withDate) {
    const d = new Date(iso);
    const hm = `${two(d.getHours())}:${two(d.getMinutes())}`;
    return withDate ? `${two(d.getMonth() + 1)}-${two(d.getDate())} ${hm}` : hm;
  }
  function fullTime(iso) {
    const d = new Date(iso);
    return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
      `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  }
  const verdictLabel = (v) => ({
    ok: T("history.verdict_ok", "OK"),
    defect: T("history.verdict_ng", "NG"),
    error: T("history.verdict_error", "error"),
  })[v] || v;

  // ---------------------------------------------------------------- filters
  function readFilters() {
    const f = {};
    const iso = (v) => (v ? new Date(v).toISOString() : "");
    const since = iso($("f-since").value), until = iso($("f-until").value);
    if (since) f.since = since;
    if (until) f.until = until;
    if ($("f-verdict").value) f.verdict = $("f-verdict").value;
    if ($("f-reviewed").value) f.reviewed = $("f-reviewed").value;
    const cls = $("f-class").value.trim();
    if (cls) f.class = cls;
    return f;
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
    const s = q.toString();
    return s ? "?" + s : "";
  }

  // Time range and class only: the charts show every verdict.  Without a time range, the last 24 h
  // (the charts read every record of their range).
  function chartFilters() {
    const f = {};
    for (const k of ["since", "until", "class"]) if (state.filters[k]) f[k] = state.filters[k];
    if (!f.since && !f.until) f.since = new Date(Date.now() - DEFAULT_RANGE_MS).toISOString();
    return f;
  }

  // ---------------------------------------------------------------- SVG helpers
  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svgBox(w, h) {
    return el("svg", { viewBox: `0 0 ${w} ${h}`, width: "100%", role: "img", preserveAspectRatio: "xMidYMid meet" });
  }
  function empty(container, text) {
    const p = document.createElement("p");
    p.className = "chart-empty";
    p.textContent = text;
    container.replaceChildren(p);
  }
  function addTitle(node, text) {
    node.append(el("title", {}, text));
    return node;
  }

  // ---------------------------------------------------------------- charts
  const W = 560, H = 220, M = { l: 46, r: 12, t: 12, b: 34 };

  // Yield per bucket: stacked bars OK (green) / NG (red) as a share of the judged parts,
  // with the defect rate as a line.
  function drawYield(stats) {
    const box = $("yield-chart");
    const bs = stats.buckets.filter((b) => b.ok + b.defect > 0);
    if (!bs.length) { empty(box, T("history.no_data", "No inspections in this range.")); return; }
    const svg = svgBox(W, H);
    const iw = W - M.l - M.r, ih = H - M.t - M.b;
    const y = (p) => M.t + ih * (1 - p);
    for (const p of [0, 0.5, 1]) {
      svg.append(el("line", { x1: M.l, x2: W - M.r, y1: y(p), y2: y(p), class: "grid" }));
      svg.append(el("text", { x: M.l - 6, y: y(p) + 4, class: "axis", "text-anchor": "end" }, (100 * p) + "%"));
    }
    const step = iw / bs.length;
    const bw = Math.max(2, Math.min(48, step * 0.7));
    const withDate = stats.bucket !== "hour" || new Set(bs.map((b) => b.start.slice(0, 10))).size > 1;
    const pts = [];
    bs.forEach((b, i) => {
      const judged = b.ok + b.defect;
      const x = M.l + step * i + (step - bw) / 2;
      const g = el("g", { class: "bar", "data-start": b.start, "data-ok": b.ok, "data-defect": b.defect,
                           "data-n": b.n, "data-reviewed": b.reviewed });
      const okH = ih * (b.ok / judged);
      g.append(el("rect", { x: x, y: y(1), width: bw, height: ih - okH, class: "bar-ng" }));
      g.append(el("rect", { x: x, y: y(1) + ih - okH, width: bw, height: okH, class: "bar-ok" }));
      addTitle(g, T("history.bar_title", "{time}: {n} parts, yield {yield}, defect rate {rate}, {ok} OK, {ng} NG, {reviewed} reviewed",
        { time: timeText(b.start, true), n: b.n, yield: pct(b.yield), rate: pct(b.defect_rate),
          ok: b.ok, ng: b.defect, reviewed: b.reviewed }));
      svg.append(g);
      pts.push([x + bw / 2, y(b.defect_rate)]);
      if (bs.length <= 16 || i % Math.ceil(bs.length / 12) === 0) {
        svg.append(el("text", { x: x + bw / 2, y: H - M.b + 14, class: "axis", "text-anchor": "middle" },
          timeText(b.start, withDate)));
      }
    });
    svg.append(el("polyline", { points: pts.map((p) => p.join(",")).join(" "), class: "rate-line" }));
    for (const [px, py] of pts) svg.append(el("circle", { cx: px, cy: py, r: 2.5, class: "rate-dot" }));
    const legend = el("text", { x: W - M.r, y: H - 4, class: "axis", "text-anchor": "end" },
      T("history.yield_legend", "green: yield · red: NG share · line: defect rate"));
    svg.append(legend);
    box.replaceChildren(svg);
  }

  // Individuals (Shewhart) chart: scores in time order, centre line, ±3σ from the unit space's
  // leave-one-out scores, the threshold; points beyond the limits marked.
  function drawControl(items, control) {
    const box = $("control-chart");
    const note = $("control-note");
    const pts = items.filter((r) => r.score !== null && r.score !== undefined && isFinite(r.score));
    const limits = control && control.available ? control : null;
    if (limits) {
      note.textContent = T("history.control_note",
        "Centre {c}, σ {s}, UCL {u}, LCL {l} from {n} leave-one-out scores of the unit space; threshold {t}.",
        { c: fmt(limits.centre), s: fmt(limits.sigma), u: fmt(limits.ucl), l: fmt(limits.lcl),
          n: limits.n, t: fmt(limits.threshold) });
    } else {
      note.textContent = control && control.reason
        ? T("history.control_unavailable", "No control limits: {reason}", { reason: control.reason }) : "";
    }
    if (!pts.length) { empty(box, T("history.no_scores", "No scored inspections in this range.")); return; }
    const thr = control ? control.threshold : null;
    const refs = [];
    if (limits) refs.push(limits.ucl, limits.lcl, limits.centre);
    if (thr !== null && thr !== undefined && isFinite(thr)) refs.push(thr);
    const vals = pts.map((r) => r.score);
    let lo = Math.min(...vals, ...refs), hi = Math.max(...vals, ...refs);
    // Defects can score far above the band: clip the axis so the band stays readable.
    const bandTop = Math.max(...refs.length ? refs : vals);
    const bandLow = Math.min(...refs.length ? refs : vals);
    const cap = bandTop + 3 * Math.max(bandTop - bandLow, Math.abs(bandTop) * 0.1, 1e-9);
    const clipped = hi > cap;
    if (clipped) hi = cap;
    if (limits) lo = Math.min(lo, limits.lcl);
    if (hi === lo) { hi += 1; lo -= 1; }
    const pad = (hi - lo) * 0.06;
    hi += pad; lo -= pad;
    const svg = svgBox(W, H);
    const iw = W - M.l - M.r, ih = H - M.t - M.b;
    const y = (v) => M.t + ih * (1 - (Math.min(v, hi) - lo) / (hi - lo));
    const x = (i) => M.l + (pts.length === 1 ? iw / 2 : (iw * i) / (pts.length - 1));
    for (const v of [lo + pad, (lo + hi) / 2, hi - pad]) {
      svg.append(el("text", { x: M.l - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, fmt(v)));
    }
    const hline = (v, cls, label, left) => {
      if (v === null || v === undefined || !isFinite(v) || v < lo || v > hi) return;
      svg.append(el("line", { x1: M.l, x2: W - M.r, y1: y(v), y2: y(v), class: cls }));
      svg.append(el("text", { x: left ? M.l + 4 : W - M.r - 2, y: y(v) - 3, class: "axis line-label " + cls,
                              "text-anchor": left ? "start" : "end" }, label));
    };
    if (limits) {
      hline(limits.ucl, "ucl", T("history.ucl", "UCL"));
      hline(limits.centre, "centre", T("history.cl", "CL"));
      hline(limits.lcl, "lcl", T("history.lcl", "LCL"));
    }
    hline(thr, "threshold-line", T("history.threshold", "threshold"), true);
    svg.append(el("polyline", { points: pts.map((r, i) => `${x(i)},${y(r.score)}`).join(" "), class: "score-line" }));
    let out = 0;
    pts.forEach((r, i) => {
      const beyond = limits ? r.score > limits.ucl || r.score < limits.lcl : false;
      out += beyond;
      const fin = r.review_verdict || r.verdict;
      const cls = "pt" + (beyond ? " ooc" : "") + (fin === "defect" ? " ng" : "") + (r.score > hi ? " clipped" : "");
      const node = r.score > hi
        ? el("path", { d: `M${x(i) - 4},${M.t + 7} L${x(i) + 4},${M.t + 7} L${x(i)},${M.t} Z` })
        : el("circle", { cx: x(i), cy: y(r.score), r: beyond ? 4 : 3 });
      node.setAttribute("class", cls);
      node.setAttribute("data-id", r.id);
      node.setAttribute("data-score", r.score);
      addTitle(node, `#${r.id} ${fullTime(r.created_at)} ${r.source || ""} · ${T("history.col_score", "Score")} ${fmt(r.score)} · ${verdictLabel(fin)}`);
      svg.append(node);
    });
    svg.append(el("text", { x: M.l, y: H - 8, class: "axis" },
      T("history.control_axis", "last {n} scored parts, oldest left · {out} beyond the limits",
        { n: pts.length, out: out }) + (clipped ? " · " + T("history.clipped", "▲ above the axis") : "")));
    svg.dataset.points = String(pts.length);
    svg.dataset.beyond = String(out);
    box.replaceChildren(svg);
  }

  const PALETTE = ["#c62828", "#ef6c00", "#8e24aa", "#3949ab", "#00897b", "#6d4c41", "#546e7a", "#f9a825"];

  // Defect classes per hour, stacked counts (classifier models).
  function drawClasses(stats) {
    const box = $("classes-chart");
    const good = state.model ? state.model.good_class : null;
    const bs = stats.buckets;
    const names = [];
    for (const b of bs) for (const c of Object.keys(b.classes)) if (c !== good && !names.includes(c)) names.push(c);
    names.sort();
    const totals = bs.map((b) => names.reduce((s, c) => s + (b.classes[c] || 0), 0));
    const top = Math.max(0, ...totals);
    if (!top) { empty(box, T("history.no_defects", "No defect classes in this range.")); return; }
    const svg = svgBox(W, H);
    const iw = W - M.l - M.r, ih = H - M.t - M.b;
    const y = (v) => M.t + ih * (1 - v / top);
    for (const v of [0, Math.round(top / 2), top]) {
      svg.append(el("text", { x: M.l - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, String(v)));
      svg.append(el("line", { x1: M.l, x2: W - M.r, y1: y(v), y2: y(v), class: "grid" }));
    }
    const step = iw / bs.length, bw = Math.max(2, Math.min(48, step * 0.7));
    const withDate = new Set(bs.map((b) => b.start.slice(0, 10))).size > 1;
    bs.forEach((b, i) => {
      const x = M.l + step * i + (step - bw) / 2;
      let acc = 0;
      names.forEach((c, j) => {
        const n = b.classes[c] || 0;
        if (!n) return;
        const r = el("rect", { x: x, y: y(acc + n), width: bw, height: y(acc) - y(acc + n),
                               fill: PALETTE[j % PALETTE.length], class: "cls-bar", "data-class": c, "data-n": n });
        addTitle(r, `${timeText(b.start, true)} · ${c}: ${n}`);
        svg.append(r);
        acc += n;
      });
      if (bs.length <= 16 || i % Math.ceil(bs.length / 12) === 0) {
        svg.append(el("text", { x: x + bw / 2, y: H - M.b + 14, class: "axis", "text-anchor": "middle" },
          timeText(b.start, withDate)));
      }
    });
    let lx = M.l;
    names.forEach((c, j) => {
      svg.append(el("rect", { x: lx, y: H - 14, width: 10, height: 10, fill: PALETTE[j % PALETTE.length] }));
      svg.append(el("text", { x: lx + 14, y: H - 5, class: "axis" }, c));
      lx += 24 + 7 * c.length;
    });
    box.replaceChildren(svg);
  }

  // ---------------------------------------------------------------- table
  async function thumbFor(r) {
    if (state.thumbs.has(r.id)) return state.thumbs.get(r.id);
    let url = "";
    if (r.image_available) {
      const path = `/v1/inspections/${r.id}/` + (r.overlay_key ? "overlay" : "image");
      try {
        const resp = await api(path);
        if (resp.ok) url = URL.createObjectURL(await resp.blob());
      } catch (e) { url = ""; }
    }
    state.thumbs.set(r.id, url);
    return url;
  }

  // The latest review's note (the list has no notes): one GET per reviewed row, cached.
  async function noteFor(r) {
    const key = `${r.id}@${r.reviewed_at}`;
    if (!state.notes.has(key)) {
      try {
        const one = await getJson(`/v1/inspections/${r.id}`);
        const last = (one.reviews || []).slice(-1)[0];
        state.notes.set(key, last ? last.note || "" : "");
      } catch (e) { return ""; }
    }
    return state.notes.get(key);
  }

  function thumbCell(r) {
    const td = document.createElement("td");
    td.className = "thumb-cell";
    if (!r.image_available) {
      const span = document.createElement("span");
      span.className = "no-image";
      span.textContent = r.image_pruned_at ? T("history.pruned", "pruned") : T("history.not_kept", "not kept");
      span.title = r.image_pruned_at
        ? T("history.pruned_title", "The image was removed by the retention policy on {time}", { time: fullTime(r.image_pruned_at) })
        : T("history.not_kept_title", "The station did not keep this image (see --keep)");
      td.append(span);
      return td;
    }
    const img = document.createElement("img");
    img.className = "row-thumb";
    img.alt = r.source || String(r.id);
    td.append(img);
    thumbFor(r).then((url) => {
      if (url) img.src = url;
      else { img.replaceWith(Object.assign(document.createElement("span"), { className: "no-image", textContent: "–" })); }
    });
    return td;
  }

  function verdictCell(r) {
    const td = document.createElement("td");
    const fin = r.review_verdict || r.verdict;
    const badge = document.createElement("span");
    badge.className = "pill " + fin;
    badge.textContent = verdictLabel(fin);
    td.append(badge);
    if (r.review_verdict && r.review_verdict !== r.verdict) {
      const was = document.createElement("span");
      was.className = "was";
      was.textContent = T("history.model_said", "model: {v}", { v: verdictLabel(r.verdict) });
      td.append(" ", was);
    }
    if (r.error) td.title = r.error;
    return td;
  }

  function textCell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function renderRows() {
    const tbody = $("rows");
    if (state.thumbs.size > 500) { // paging through a long history: keep only this page's pictures
      const keep = new Set(state.items.map((r) => r.id));
      for (const [id, url] of state.thumbs) {
        if (!keep.has(id)) { if (url) URL.revokeObjectURL(url); state.thumbs.delete(id); }
      }
    }
    const classifier = state.model && state.model.kind === "classifier";
    for (const th of document.querySelectorAll(".col-class")) th.hidden = !classifier;
    if (!state.items.length) {
      const tr = document.createElement("tr");
      const td = textCell(state.recording ? T("history.no_rows", "No inspections match these filters.")
        : T("history.not_recording", "This station does not record inspections (start it with --db or --record)."), "empty-row");
      td.colSpan = 8;
      tr.append(td);
      tbody.replaceChildren(tr);
      return;
    }
    const rows = state.items.map((r) => {
      const tr = document.createElement("tr");
      tr.dataset.id = String(r.id);
      tr.dataset.verdict = r.review_verdict || r.verdict;
      tr.dataset.reviewed = r.review_verdict ? "1" : "0";
      tr.className = "v-" + (r.review_verdict || r.verdict);
      const time = textCell(fullTime(r.created_at), "time");
      time.title = r.created_at;
      const src = textCell(r.source || "–", "source");
      src.title = [r.source, r.station, r.client, r.digest].filter(Boolean).join(" · ");
      const score = textCell(r.error ? "–" : fmt(r.score), "num");
      if (r.threshold !== null) score.title = T("history.threshold_was", "threshold {t}", { t: fmt(r.threshold) });
      const cls = textCell(r.cls ? `${r.cls} ${pct(r.confidence)}` : "–", "col-class");
      cls.hidden = !classifier;
      const model = textCell((r.model_id || "–") + (r.model_version ? ` v${r.model_version}` : ""), "model");
      const rev = document.createElement("td");
      const holder = document.createElement("div");
      rev.append(holder);
      if (window.gaikanReview && !r.error) {
        const w = window.gaikanReview.mount(holder, r, { api: api, onDone: (out) => {
          const last = (out.reviews || []).slice(-1)[0];
          if (last) state.notes.set(`${out.id}@${out.reviewed_at}`, last.note || "");
          refresh({ force: true });
        } });
        if (r.review_verdict) noteFor(r).then((note) => { if (note) w.update({ note: note }); });
      }
      tr.append(time, thumbCell(r), src, verdictCell(r), score, cls, model, rev);
      return tr;
    });
    tbody.replaceChildren(...rows);
  }

  function renderPager() {
    const a = state.total ? state.offset + 1 : 0, b = state.offset + state.items.length;
    $("page-info").textContent = T("history.page_info", "{a}–{b} of {total}", { a: a, b: b, total: state.total });
    $("prev").disabled = state.offset === 0;
    $("next").disabled = b >= state.total;
  }

  function renderSummary(hourStats, last24h) {
    const sum = { n: 0, ok: 0, defect: 0, error: 0, reviewed: 0, overridden: 0 };
    for (const b of hourStats.buckets) for (const k of Object.keys(sum)) sum[k] += b[k];
    const judged = sum.ok + sum.defect;
    const s = $("summary");
    s.textContent = (last24h ? T("history.last_24h", "Last 24 h") + ": " : "") + T("history.summary",
      "{n} inspections: {ok} OK, {ng} NG, {err} errors · yield {yield} · reviewed {reviewed} · overridden {overridden}",
      { n: sum.n, ok: sum.ok, ng: sum.defect, err: sum.error, yield: pct(judged ? sum.ok / judged : null),
        reviewed: sum.reviewed, overridden: sum.overridden });
    s.dataset.n = String(sum.n);
    s.dataset.reviewed = String(sum.reviewed);
    s.dataset.overridden = String(sum.overridden);
  }

  function updateCsvLink() {
    $("csv-link").href = "/v1/inspections.csv" + query(state.filters);
  }

  // ---------------------------------------------------------------- refresh
  // The table every poll; the summary and charts (which read every record of their range) when
  // something changed, at most every CHART_MS, and at least every CHART_IDLE_MS.
  async function refresh(opts) {
    opts = opts || {};
    if (state.busy && !opts.force) return;
    const seq = ++state.seq; // a later refresh wins (e.g. Apply while a poll is in flight)
    state.busy = true;
    try {
      const list = await getJson("/v1/inspections" +
        query(Object.assign({ limit: PAGE, offset: state.offset }, state.filters)));
      if (seq !== state.seq) return;
      state.recording = true;
      if (state.offset > 0 && state.offset >= list.total) {
        state.offset = 0;
        state.busy = false;
        return refresh(opts);
      }
      state.items = list.items;
      state.total = list.total;
      // Redraw the table only when it changed, and never under the operator's typing.
      const key = JSON.stringify(list.items.map((r) => [r.id, r.review_verdict, r.reviewed_at, r.image_available]));
      const typing = document.activeElement && $("rows").contains(document.activeElement) &&
        document.activeElement.tagName === "INPUT";
      if (key + "/" + list.total !== state.dataKey) state.chartsStale = true;
      state.dataKey = key + "/" + list.total;
      if ((key !== state.lastKey || opts.force) && !typing) {
        state.lastKey = key;
        renderRows();
      }
      renderPager();
      const age = Date.now() - state.chartsAt;
      if (opts.force || age >= CHART_IDLE_MS || (state.chartsStale && age >= CHART_MS)) await refreshCharts(seq, opts.force);
      if (seq !== state.seq) return;
      document.body.dataset.updated = String(Date.now());
      setStatus(T("history.updated", "Updated {time}", { time: fullTime(new Date().toISOString()) }));
    } catch (e) {
      if (seq !== state.seq) return;
      if (e.status === 404) {
        state.recording = false;
        state.items = [];
        renderRows();
        setStatus(T("history.not_recording", "This station does not record inspections (start it with --db or --record)."), true);
      } else {
        setStatus(T("history.refresh_failed", "Refresh failed: {error}", { error: e.message }), true);
      }
    } finally {
      if (seq === state.seq) {
        state.busy = false;
        // Ready = the latest refresh since the model loaded has drawn (or reported) the page.
        // Not the first refresh's promise: a later one (the catalog's re-render) supersedes it
        // and returns early, before the charts are drawn.
        if (state.started) document.body.dataset.ready = "1";
      }
    }
  }

  async function refreshCharts(seq, force) {
    const cf = chartFilters();
    const bucket = $("bucket").value;
    const [hours, other, recent, control] = await Promise.all([
      getJson("/v1/stats" + query(Object.assign({ bucket: "hour" }, cf))),
      bucket === "hour" ? null : getJson("/v1/stats" + query(Object.assign({ bucket: bucket }, cf))),
      getJson("/v1/inspections" + query(Object.assign({ limit: CONTROL_POINTS }, cf))),
      state.control && !force ? state.control : getJson("/v1/control"),
    ]);
    if (seq !== state.seq) return;
    state.chartsAt = Date.now();
    state.chartsStale = false;
    state.control = control;
    renderSummary(hours, !state.filters.since && !state.filters.until);
    drawYield(other || hours);
    drawControl(recent.items.slice().reverse(), control);
    if (state.model && state.model.kind === "classifier") {
      $("classes-box").hidden = false;
      drawClasses(hours);
    }
  }

  async function loadModel() {
    try {
      const m = await getJson("/v1/model");
      state.model = m;
      const [h, w] = m.image_shape;
      const v = m.active_version ? ` v${m.active_version.version}` : (m.record && m.record.model_version ? ` v${m.record.model_version}` : "");
      $("model-info").textContent = (m.kind === "classifier" ? T("history.classifier", "classifier") : m.detector) +
        ` · ${h}×${w} px` + (m.threshold !== null && m.threshold !== undefined ? ` · ${T("history.threshold", "threshold")} ${fmt(m.threshold)}` : "") +
        (m.record ? ` · ${m.record.model_id || ""}${v} · ${m.record.station || ""}` : "");
      $("f-class-box").hidden = m.kind !== "classifier";
      if (m.record && window.gaikanReview) window.gaikanReview.mountReviewer($("reviewer-slot"), { api: api });
      const list = $("class-list");
      list.replaceChildren(...(m.classes || []).map((c) => Object.assign(document.createElement("option"), { value: c })));
    } catch (e) {
      $("model-info").textContent = T("history.model_unavailable", "model unavailable");
    }
  }

  // CSV: a plain link; with a token the download goes through fetch (the header carries it).
  async function downloadCsv(ev) {
    if (!window.gaikanApi.token()) return;
    ev.preventDefault();
    const resp = await api($("csv-link").getAttribute("href"));
    if (!resp.ok) { setStatus(T("history.csv_failed", "CSV export failed: {status}", { status: resp.status }), true); return; }
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await resp.blob());
    const cd = resp.headers.get("Content-Disposition") || "";
    const m = /filename="([^"]+)"/.exec(cd);
    a.download = m ? m[1] : "inspections.csv";
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  function wire() {
    $("filters").addEventListener("submit", (e) => {
      e.preventDefault();
      state.filters = readFilters();
      state.offset = 0;
      updateCsvLink();
      refresh({ force: true });
    });
    $("reset-filters").addEventListener("click", () => {
      $("filters").reset();
      state.filters = {};
      state.offset = 0;
      updateCsvLink();
      refresh({ force: true });
    });
    $("refresh").addEventListener("click", () => refresh({ force: true }));
    $("bucket").addEventListener("change", () => refresh({ force: true }));
    $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); refresh({ force: true }); });
    $("next").addEventListener("click", () => { state.offset += PAGE; refresh({ force: true }); });
    $("csv-link").addEventListener("click", downloadCsv);
    setInterval(() => {
      if ($("auto").checked && document.visibilityState === "visible" && state.recording) refresh();
    }, POLL_MS);
    document.addEventListener("gaikan-i18n-ready", () => { state.lastKey = ""; refresh({ force: true }); });
  }

  wire();
  updateCsvLink();
  loadModel().then(() => { state.started = true; return refresh({ force: true }); });
})();
