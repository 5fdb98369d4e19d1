// gaikan Models page: versions, refit from reviewed goods, activation (plain JS, this server only).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const T = (k, en, v) => window.gaikanI18n ? window.gaikanI18n.t(k, en, v) : en.replace(/\{(\w+)\}/g, (_, n) => (v && n in v ? v[n] : ""));
  const state = { listing: null, result: null };

  // one column (the station's stylesheet lays <main> out in two); the table scrolls when narrow.
  // Set through the CSSOM: the page's CSP allows no inline style attributes.
  document.querySelector("main").style.gridTemplateColumns = "minmax(0, 1fr)";
  $("versions-wrap").style.overflowX = "auto";
  $("versions").style.width = "100%";
  $("versions").style.borderCollapse = "collapse";
  document.querySelector("header nav a").style.color = "inherit";
  $("refit-result").style.margin = ".6rem 0";
  function cellStyle(cell) {
    cell.style.padding = ".3rem .6rem";
    cell.style.textAlign = "left";
    cell.style.verticalAlign = "top";
    cell.style.borderBottom = "1px solid var(--line)";
  }
  document.querySelectorAll("#versions th").forEach(cellStyle);

  // ---------------------------------------------------------------- API + auth (static/api.js)
  const { api, errorText } = window.gaikanApi;

  function setStatus(text, isError) {
    const el = $("status");
    el.textContent = text || "";
    el.classList.toggle("error", Boolean(isError));
  }

  const fmt = (x) => (x === null || x === undefined ? "–" : Number(x).toPrecision(4));
  const when = (iso) => (iso ? new Date(iso).toLocaleString(window.gaikanI18n ? window.gaikanI18n.lang : undefined) : "–");

  // ---------------------------------------------------------------- versions
  async function load() {
    const resp = await api("/v1/models");
    if (!resp.ok) {
      setStatus(await errorText(resp), true);
      return;
    }
    state.listing = await resp.json();
    render();
  }

  function render() {
    const L = state.listing;
    if (!L) return;
    $("model-summary").textContent = T("models.summary", "{model}: version {version} served, threshold {threshold}", {
      model: L.model_id, version: L.served_version === null ? "–" : L.served_version, threshold: fmt(L.served_threshold),
    });
    const body = $("versions-body");
    body.textContent = "";
    for (const v of L.versions.slice().reverse()) {
      const tr = document.createElement("tr");
      tr.dataset.version = v.version;
      const cells = [
        "v" + v.version + (v.parent_version ? " ← v" + v.parent_version : ""),
        v.served && v.active ? T("models.state.active_served", "active, served")
          : v.active ? T("models.state.active", "active (not served here)")
          : v.served ? T("models.state.served", "served (not active)")
          : T("models.state.inactive", "inactive"),
        fmt(v.threshold),
        when(v.created_at),
        v.note || (v.file || ""),
        v.activations.map((a) => when(a.at) + " " + (a.who || "?")).join("; ") || "–",
      ];
      for (const text of cells) {
        const td = document.createElement("td");
        td.textContent = text;
        cellStyle(td);
        tr.appendChild(td);
      }
      const td = document.createElement("td");
      cellStyle(td);
      if (!v.served) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "activate";
        b.textContent = T("models.activate", "Activate");
        b.addEventListener("click", () => confirmActivate(v));
        td.appendChild(b);
      }
      tr.appendChild(td);
      body.appendChild(tr);
    }
    const refit = L.refit;
    $("refit").disabled = !refit.available || refit.running;
    $("refit-reason").textContent = refit.available
      ? T("models.refit.goods", "{n} inspection(s) reviewed as OK.", { n: refit.reviewed_goods })
      : refit.reason;
    $("refit-reason").classList.toggle("error", !refit.available);
    renderResult();
  }

  function renderResult() {
    const r = state.result;
    $("refit-result").hidden = !r;
    if (!r) return;
    const x = r.relabel;
    $("r-version").textContent = "v" + r.version + " (" + (r.active ? T("models.state.active", "active (not served here)") : T("models.state.inactive", "inactive")) + ")";
    $("r-threshold").textContent = fmt(r.old_threshold) + " → " + fmt(r.new_threshold);
    $("r-images").textContent = T("models.result.images_detail", "{n} = {unit} unit space + {goods} reviewed goods", {
      n: r.n_images, unit: r.n_unit_space, goods: r.n_reviewed_goods,
    });
    $("r-ng-ok").textContent = T("models.result.of", "{n} of {total} re-scored", { n: x.ng_to_ok, total: x.ng_scored });
    $("r-ok-ng").textContent = T("models.result.of", "{n} of {total} re-scored", { n: x.ok_to_ng, total: x.ok_scored });
    $("r-escapes").textContent = String(x.ng_to_ok_reviewed_ng);
    $("r-escapes").style.color = x.ng_to_ok_reviewed_ng > 0 ? "var(--ng)" : "";  // parts that would escape
  }

  // ---------------------------------------------------------------- refit
  async function refit() {
    $("refit").disabled = true;
    setStatus(T("models.refit.running", "Refitting… (closed-form fits take seconds)"));
    try {
      let resp = await api("/v1/models/refit?wait=60", { method: "POST" });
      if (!resp.ok) {
        setStatus(await errorText(resp), true);
        return;
      }
      let job = await resp.json();
      while (job.state === "running") {
        await new Promise((ok) => setTimeout(ok, 1000));
        resp = await api(job.url);
        if (!resp.ok) {
          setStatus(await errorText(resp), true);
          return;
        }
        job = await resp.json();
      }
      if (job.state === "failed") {
        setStatus(job.error, true);
        return;
      }
      state.result = job.result;
      if (job.result.already_registered) {
        setStatus(T("models.refit.same", "The refit gives the same model as version {version}: no new reviewed goods to learn from.", { version: job.result.version }));
      } else {
        setStatus(T("models.refit.done", "Version {version} is ready (inactive). Check the counts, then activate it.", { version: job.result.version }));
      }
    } catch (e) {
      setStatus(String(e), true);
    } finally {
      await load();
    }
  }

  // ---------------------------------------------------------------- activation (with a confirm step)
  function confirmActivate(v) {
    const dlg = $("confirm-dialog");
    $("confirm-text").textContent = T("models.confirm.text", "Activate version {version} (threshold {threshold})? New inspections use it at once.", {
      version: v.version, threshold: fmt(v.threshold),
    });
    const onClose = async () => {
      dlg.removeEventListener("close", onClose);
      if (dlg.returnValue !== "ok") return;
      const who = $("confirm-who").value.trim();
      const resp = await api("/v1/models/" + v.version + "/activate", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(who ? { who } : {}),
      });
      if (!resp.ok) {
        setStatus(await errorText(resp), true);
      } else {
        setStatus(T("models.activated", "Version {version} is active and served.", { version: v.version }));
        if (state.result && state.result.version === v.version) state.result = null;
      }
      await load();
    };
    dlg.returnValue = "";
    dlg.addEventListener("close", onClose);
    dlg.showModal();
  }

  $("refit").addEventListener("click", refit);
  document.addEventListener("gaikan-i18n-ready", render);
  load().catch((e) => setStatus(String(e), true));
})();
