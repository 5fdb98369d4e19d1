/* gaikan station pages: the one way they call the station's API.
 *
 * The bearer token is kept for the browser tab (sessionStorage) and asked
 * for once, through a <dialog id="token-dialog"> that this file adds to the
 * page the first time, when an answer is 401; a rejected token is forgotten
 * and asked for again.  Messages go through the page's translations
 * (i18n.js) when they are loaded; the dialog's data-i18n attributes follow
 * a change of language like the rest of the page.
 *
 *   gaikanApi.api(path, init) -> Promise<Response>
 *   gaikanApi.errorText(resp) -> Promise<string>   (the server's "error" text)
 *   gaikanApi.token()         -> the token in use, or null
 */
(function () {
  "use strict";

  const TOKEN_KEY = "gaikan-token";
  const T = (k, en, v) =>
    window.gaikanI18n
      ? window.gaikanI18n.t(k, en, v)
      : en.replace(/\{(\w+)\}/g, (_, n) => (v && n in v ? v[n] : ""));
  let token = sessionStorage.getItem(TOKEN_KEY);
  let tokenPrompt = null;

  function el(tag, props, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  }

  function tokenDialog() {
    const found = document.getElementById("token-dialog");
    if (found) return found;
    const input = el("input", {
      id: "token-input", type: "password", autocomplete: "off", required: true,
      placeholder: T("station.token_placeholder", "token"),
    });
    input.dataset.i18nPlaceholder = "station.token_placeholder";
    const ok = el("button", { id: "token-ok", type: "submit", value: "ok" }, T("station.use_token", "Use token"));
    ok.dataset.i18n = "station.use_token";
    const form = el("form", { id: "token-form", method: "dialog" }, el("p", {}), input,
      el("div", { className: "row" }, ok));
    const dlg = el("dialog", { id: "token-dialog" }, form);
    document.body.append(dlg);
    return dlg;
  }

  function askToken(key, english) {
    if (tokenPrompt) return tokenPrompt;
    const dlg = tokenDialog();
    const input = dlg.querySelector("input");
    const text = dlg.querySelector("p");
    text.dataset.i18n = key; // translated again when the page's messages arrive or change
    text.textContent = T(key, english);
    input.value = "";
    tokenPrompt = new Promise((resolve) => {
      const onClose = () => {
        dlg.removeEventListener("close", onClose);
        tokenPrompt = null;
        const value = input.value.trim();
        if (value) {
          token = value;
          sessionStorage.setItem(TOKEN_KEY, value);
        }
        resolve(Boolean(value));
      };
      dlg.addEventListener("close", onClose);
    });
    if (!dlg.open) dlg.showModal();
    input.focus();
    return tokenPrompt;
  }

  async function api(path, options = {}) {
    for (let attempt = 0; attempt < 4; attempt++) {
      const headers = Object.assign({}, options.headers || {});
      if (token) headers["Authorization"] = "Bearer " + token;
      const resp = await fetch(path, Object.assign({}, options, { headers }));
      if (resp.status !== 401) return resp;
      const ask = token
        ? ["station.token_rejected", "That token was not accepted. Enter the station's access token."]
        : ["station.token_needed", "This station needs an access token."];
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      token = null;
      if (!(await askToken(...ask))) return resp;
    }
    throw new Error(T("station.token_refused", "the server keeps refusing the token"));
  }

  async function errorText(resp) {
    try {
      const body = await resp.json();
      return body.error || resp.statusText;
    } catch (e) {
      return resp.status + " " + resp.statusText;
    }
  }

  window.gaikanApi = { api, errorText, token: () => token };
})();
