// ngserve: the viewer state in the URL hash, applied and kept up to date here rather than by
// the client's own UrlHashBinding.
//
// Why: that binding writes the hash through lodash's debounce with maxWait, which runs
// *synchronously* inside a state change once 200-400 ms have passed since the first one.
// Restoring a state adds every layer first and restores them one by one afterwards; on a busy
// machine the debounce fires in between and serialises an annotation layer that is not restored
// yet, whose toJSON throws ("Cannot read properties of undefined (reading 'length')",
// src/layer/annotation/index.ts, localAnnotationRelationships).  The exception unwinds into the
// restore of whichever layer was in progress, and the client deletes that layer: the image
// vanished in most loads.  Here the hash is held back from the client's start-up (so it makes
// no binding) and applied once the viewer exists; writes back to the hash only ever run from a
// timer, after the restore has finished.
(() => {
  const DELAY_MS = 200;
  const held = location.hash;
  const parse = (hash) => {
    const text = decodeURIComponent(hash.slice(hash.startsWith("#!+") ? 3 : 2));
    return text.startsWith("{") ? JSON.parse(text) : null;
  };
  // A page without a #! state gets its state from the server's event stream (a notebook viewer,
  // ngstate.show).  That state names data by the base URL Python used (message field "b", e.g. the
  // kernel's http://127.0.0.1:<port>); a page reached through a proxy (jupyter-server-proxy's
  // /proxy/<port>/) reads the same server at its own base, the part of its URL before /-/viewer/.
  const rebase = () => {
    const NativeEventSource = window.EventSource;
    const at = location.pathname.indexOf("/-/viewer/");
    const own = location.origin + (at > 0 ? location.pathname.slice(0, at) : "");
    const rewrite = (ev) => {
      try {
        const base = JSON.parse(ev.data).b;
        if (!base || base === own) return ev;
        return new MessageEvent("message", { data: ev.data.split(base + "/").join(own + "/") });
      } catch (e) {
        return ev;
      }
    };
    window.EventSource = class extends NativeEventSource {
      set onmessage(handler) {
        super.onmessage = handler && ((ev) => handler(rewrite(ev)));
      }
    };
  };
  try {
    if (!held.startsWith("#!") || (!/^#!https?:\/\//.test(held) && parse(held) === null)) return rebase();
  } catch (e) {
    return; // not JSON (e.g. the legacy URL-safe form): leave it to the client
  }
  history.replaceState(null, "", location.pathname + location.search);

  // Nothing listens for this page's state: the hash owns it.  So the client's event stream
  // (…/events/<token>) gets a stand-in that opens and stays silent without a request.  A real,
  // never-ending stream would keep headless Chromium's --virtual-time-budget from ever finishing
  // (screenshots); a closed one would show "Disconnected from Python server".
  const NativeEventSource = window.EventSource;
  window.EventSource = function (url, init) {
    if (!/\/events\/[^/]+$/.test(new URL(url, location.href).pathname)) return new NativeEventSource(url, init);
    const quiet = new EventTarget();
    Object.assign(quiet, { url: String(url), readyState: 0, onopen: null, onmessage: null, onerror: null });
    quiet.close = () => { quiet.readyState = 2; };
    setTimeout(() => {
      if (quiet.readyState !== 0) return;
      quiet.readyState = 1;
      const opened = new Event("open");
      quiet.dispatchEvent(opened);
      if (quiet.onopen) quiet.onopen(opened);
    }, 0);
    return quiet;
  };

  const encode = (text) =>
    encodeURI(text).replace(/[!'()*;,]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
  const bigints = (key, value) => (typeof value === "bigint" ? value.toString() : value);

  document.addEventListener("DOMContentLoaded", () => {
    const state = window.viewer.state;
    let written = "";
    let timer;
    const write = () => {
      timer = undefined;
      const text = JSON.stringify(state.toJSON(), bigints);
      if (text !== written) {
        written = text;
        history.replaceState(null, "", text === "{}" ? "#" : "#!" + encode(text));
      }
    };
    const restore = (json, merge) => {
      if (!merge) state.reset();
      state.restoreState(json);
    };
    const apply = (hash) => {
      try {
        if (/^#!https?:\/\//.test(hash)) {
          fetch(hash.slice(2), { credentials: "same-origin" })
            .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))))
            .then((json) => restore(json, false))
            .catch((e) => console.error(`ngserve: cannot load the state at ${hash.slice(2)}: ${e}`));
        } else if (hash.startsWith("#!")) {
          restore(parse(hash), hash.startsWith("#!+"));
        }
      } catch (e) {
        console.error(`ngserve: cannot read the state in the URL: ${e}`);
      }
    };
    state.changed.add(() => {
      if (timer === undefined) timer = setTimeout(write, DELAY_MS);
    });
    window.addEventListener("hashchange", () => apply(location.hash));
    history.replaceState(null, "", held); // the URL shows the state again (no hashchange event)
    apply(held);
  });
})();
