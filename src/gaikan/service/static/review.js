// gaikan operator review: Confirm / Override (OK <-> NG) with a note, for the station page and
// the history page.  Plain JS, no dependencies.  POST /v1/inspections/{id}/review.
"use strict";

(function () {
  const T = (k, en, v) => window.gaikanI18n ? window.gaikanI18n.t(k, en, v) : en.replace(/\{(\w+)\}/g, (_, n) => (v && n in v ? v[n] : ""));
  const NAME_KEY = "gaikan-reviewer";
  const LABEL = () => ({ ok: T("review.ok", "OK"), defect: T("review.ng", "NG") });

  function reviewer() {
    try { return (localStorage.getItem(NAME_KEY) || "").trim(); } catch (e) { return ""; }
  }

  function setReviewer(name) {
    try { localStorage.setItem(NAME_KEY, name.trim()); } catch (e) { /* private mode */ }
  }

  // The reviewer's name field (one per page), remembered in localStorage; its placeholder names
  // the identity the server records when it is left empty (opts.api: the page's fetch).
  function mountReviewer(el, opts) {
    if (!el) return;
    el.classList.add("reviewer-box");
    const label = document.createElement("label");
    label.htmlFor = "reviewer-name";
    label.dataset.i18n = "review.reviewer";
    label.textContent = T("review.reviewer", "Reviewer");
    const input = document.createElement("input");
    input.id = "reviewer-name";
    input.type = "text";
    input.maxLength = 200;
    input.autocomplete = "name";
    input.dataset.i18nPlaceholder = "review.reviewer_placeholder";
    input.placeholder = T("review.reviewer_placeholder", "your name (else the token/address)");
    input.value = reviewer();
    input.addEventListener("change", () => setReviewer(input.value));
    input.addEventListener("input", () => setReviewer(input.value));
    el.replaceChildren(label, input);
    const api = (opts && opts.api) || ((p) => fetch(p));
    const show = (who) => {
      input.placeholder = T("review.reviewer_placeholder_id", "your name (else {identity})", { identity: who });
    };
    api("/v1/identity").then((r) => (r.ok ? r.json() : null)).then((b) => {
      if (!b || !b.identity) return;
      el.dataset.identity = b.identity;
      show(b.identity);
      document.addEventListener("gaikan-i18n-ready", () => show(b.identity));
    }, () => { /* an older server: the generic placeholder stays */ });
  }

  function errorText(resp) {
    return resp.json().then((b) => b.error || resp.statusText, () => resp.status + " " + resp.statusText);
  }

  // A review widget for one recorded inspection.
  //   rec: {id, verdict, review_verdict, reviewed_by, note?}  (a /v1/inspections item will do)
  //   opts.api(path, init) -> Promise<Response>  (the page's fetch with the bearer token)
  //   opts.onDone(record)   called with the server's updated record after a review
  function mount(el, rec, opts) {
    opts = opts || {};
    const w = { rec: Object.assign({}, rec), busy: false, error: "" };
    el.classList.add("review");
    el.dataset.recordId = String(rec.id);
    for (const ev of ["click", "keydown", "mousedown"]) el.addEventListener(ev, (e) => e.stopPropagation());

    const state = document.createElement("div");
    state.className = "review-state";
    const buttons = document.createElement("div");
    buttons.className = "review-buttons";
    const confirm = document.createElement("button");
    confirm.type = "button";
    confirm.className = "review-confirm";
    const override = document.createElement("button");
    override.type = "button";
    override.className = "review-override";
    buttons.append(confirm, override);
    const note = document.createElement("input");
    note.type = "text";
    note.className = "review-note";
    note.maxLength = 2000;
    note.dataset.i18nPlaceholder = "review.note_placeholder";
    const msg = document.createElement("div");
    msg.className = "review-error";
    msg.setAttribute("role", "status");
    el.replaceChildren(state, buttons, note, msg);

    const finalOf = () => w.rec.review_verdict || w.rec.verdict;
    const other = (v) => (v === "ok" ? "defect" : "ok");

    function render() {
      const L = LABEL();
      const fin = finalOf();
      const reviewable = fin === "ok" || fin === "defect";
      el.hidden = !reviewable;
      el.dataset.reviewed = w.rec.review_verdict ? "1" : "0";
      el.dataset.final = fin;
      if (!reviewable) return;
      confirm.textContent = T("review.confirm", "Confirm {v}", { v: L[fin] });
      confirm.title = T("review.confirm_title", "The verdict is right: record it as reviewed");
      override.textContent = T("review.override", "Override → {v}", { v: L[other(fin)] });
      override.title = T("review.override_title", "The verdict is wrong: record {v} instead", { v: L[other(fin)] });
      note.placeholder = T("review.note_placeholder", "note (optional)");
      confirm.disabled = override.disabled = w.busy;
      if (w.rec.review_verdict) {
        const changed = w.rec.review_verdict !== w.rec.verdict;
        state.textContent = changed
          ? T("review.overridden", "Overridden {from} → {to} by {who}",
              { from: L[w.rec.verdict] || w.rec.verdict, to: L[w.rec.review_verdict], who: w.rec.reviewed_by || "?" })
          : T("review.confirmed", "Confirmed {v} by {who}", { v: L[w.rec.review_verdict], who: w.rec.reviewed_by || "?" });
        if (w.rec.note) state.textContent += " — " + w.rec.note;
        state.className = "review-state done" + (changed ? " changed" : "");
      } else {
        state.textContent = T("review.not_reviewed", "Not reviewed");
        state.className = "review-state";
      }
      msg.textContent = w.error;
      msg.hidden = !w.error;
    }

    async function send(verdict) {
      if (w.busy) return;
      w.busy = true;
      w.error = "";
      render();
      try {
        const body = { verdict: verdict, note: note.value.trim() || null, who: reviewer() || null };
        const api = opts.api || ((p, i) => fetch(p, i));
        const resp = await api(`/v1/inspections/${w.rec.id}/review`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
        });
        if (!resp.ok) throw new Error(await errorText(resp));
        const out = await resp.json();
        const last = (out.reviews || []).slice(-1)[0];
        w.rec = Object.assign({}, out, { note: last ? last.note : body.note });
        note.value = "";
        if (opts.onDone) opts.onDone(out);
      } catch (e) {
        w.error = T("review.failed", "Review not recorded: {error}", { error: e.message });
      } finally {
        w.busy = false;
        render();
      }
    }

    confirm.addEventListener("click", () => send(finalOf()));
    override.addEventListener("click", () => send(other(finalOf())));
    el._gaikanReview = { render: render, update: (r) => { Object.assign(w.rec, r); render(); } };
    render();
    return el._gaikanReview;
  }

  document.addEventListener("gaikan-i18n-ready", () => {
    for (const el of document.querySelectorAll(".review")) if (el._gaikanReview) el._gaikanReview.render();
  });

  window.gaikanReview = { mount: mount, mountReviewer: mountReviewer, reviewer: reviewer };
})();
