// gaikan station pages: translations. Plain JS, no dependencies, no network but this server.
//
// window.gaikanI18n = {lang, ready, t(key, en, vars), apply(root), setLang(lang)}
// - fetches GET /v1/i18n ({"lang": "ja"|"en", "messages": {key: text}}; the server negotiates:
//   ?lang= (the switcher's choice, kept in localStorage), then `gaikan serve --lang`, then the
//   browser's Accept-Language, then en);
// - once loaded: apply(document) (every [data-i18n] element's text, [data-i18n-title],
//   [data-i18n-placeholder], [data-i18n-alt], [data-i18n-aria-label]), <html lang>, and a
//   `gaikan-i18n-ready` event on document, on which pages re-render their JS strings;
// - adds a small language switcher (日本語 / English) to the page's <header>.
"use strict";

(function () {
  const LANG_KEY = "gaikan-lang";
  const TOKEN_KEY = "gaikan-token";
  const LANGS = { ja: "日本語", en: "English" };
  const ATTRS = ["title", "placeholder", "alt", "aria-label"];

  const fill = (text, vars) => String(text).replace(/\{(\w+)\}/g,
    (_, n) => (vars && n in vars ? vars[n] : ""));

  function stored() {
    try { return localStorage.getItem(LANG_KEY); } catch (e) { return null; }
  }

  const i18n = {
    lang: document.documentElement.lang || "en",
    messages: {},
    ready: null,
    t(key, en, vars) {
      const text = Object.prototype.hasOwnProperty.call(i18n.messages, key) ? i18n.messages[key] : en;
      return fill(text === undefined || text === null ? key : text, vars);
    },
    apply(root) {
      const scope = root || document;
      const all = (sel) => {
        const found = Array.from(scope.querySelectorAll(sel));
        if (scope.matches && scope.matches(sel)) found.push(scope);
        return found;
      };
      for (const el of all("[data-i18n]")) {
        if (el.dataset.i18nEn === undefined) el.dataset.i18nEn = el.textContent;
        el.textContent = i18n.t(el.dataset.i18n, el.dataset.i18nEn);
      }
      for (const attr of ATTRS) {
        const data = "data-i18n-" + attr;
        const keep = "data-i18n-en-" + attr;
        for (const el of all("[" + data + "]")) {
          if (!el.hasAttribute(keep)) el.setAttribute(keep, el.getAttribute(attr) || "");
          el.setAttribute(attr, i18n.t(el.getAttribute(data), el.getAttribute(keep)));
        }
      }
      if (scope === document) document.documentElement.lang = i18n.lang;
      syncSwitcher();
    },
    setLang(lang) {
      try { localStorage.setItem(LANG_KEY, lang); } catch (e) { /* private mode: not kept */ }
      return load(lang);
    },
  };

  async function fetchMessages(lang) {
    const url = "/v1/i18n" + (lang ? "?lang=" + encodeURIComponent(lang) : "");
    for (let attempt = 0; attempt < 120; attempt++) {
      const headers = {};
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) headers["Authorization"] = "Bearer " + token;
      const resp = await fetch(url, { headers });
      if (resp.ok) return resp.json();
      if (resp.status !== 401) throw new Error(resp.status + " " + resp.statusText);
      // A station with a token: the page asks for it; try again once it is entered.
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    throw new Error("no token for the translations");
  }

  async function load(lang) {
    try {
      const body = await fetchMessages(lang);
      i18n.lang = body.lang;
      i18n.messages = body.messages || {};
    } catch (e) {
      // The page stays in English (its built-in text); nothing else breaks.
      if (window.console) console.warn("gaikan i18n: " + e.message);
    }
    i18n.apply(document);
    document.dispatchEvent(new CustomEvent("gaikan-i18n-ready", { detail: { lang: i18n.lang } }));
    return i18n;
  }

  let switcher = null;
  function syncSwitcher() {
    if (switcher) switcher.value = i18n.lang;
  }

  function addSwitcher() {
    const header = document.querySelector("header");
    if (!header || document.getElementById("lang-switch")) return;
    switcher = document.createElement("select");
    switcher.id = "lang-switch";
    switcher.className = "lang-switch";
    switcher.setAttribute("aria-label", "Language / 言語");
    for (const [code, name] of Object.entries(LANGS)) {
      const opt = document.createElement("option");
      opt.value = code;
      opt.textContent = name;
      opt.lang = code;
      switcher.append(opt);
    }
    switcher.value = i18n.lang;
    switcher.style.font = "inherit";
    switcher.style.fontSize = ".85rem";
    switcher.addEventListener("change", () => i18n.setLang(switcher.value));
    header.append(switcher);
  }

  window.gaikanI18n = i18n;
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", addSwitcher, { once: true });
  } else {
    addSwitcher();
  }
  i18n.ready = load(stored());
})();
