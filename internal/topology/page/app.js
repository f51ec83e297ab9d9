// The topology page: draws the daemon's SVG picture (GET graph?format=svg)
// and draws it again whenever the events stream (GET /events, one JSON
// object per change) says something changed. It subscribes first and draws
// second, so no change falls between the picture and the stream; changes
// that arrive while a drawing is in flight make one more drawing after it.
// No library, no inline script (the page's Content-Security-Policy allows
// only this file).
'use strict';

(function () {
  const graph = document.getElementById('graph');
  const status = document.getElementById('status');
  const updated = document.getElementById('updated');
  let drawing = false;
  let again = false;
  let generation = 0;

  function setState(state, text) {
    document.body.dataset.state = state;
    status.textContent = text;
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  // fetchSVG returns the picture as an element of this document. The SVG
  // is parsed as XML, never as HTML: its text stays text.
  async function fetchSVG() {
    const r = await fetch('graph?format=svg', { cache: 'no-store' });
    if (!r.ok) {
      throw new Error('graph: HTTP ' + r.status);
    }
    const doc = new DOMParser().parseFromString(await r.text(), 'image/svg+xml');
    const svg = doc.documentElement;
    if (svg.localName !== 'svg' || doc.getElementsByTagName('parsererror').length > 0) {
      throw new Error('graph: the answer is not an SVG document');
    }
    return document.importNode(svg, true);
  }

  // draw replaces the picture; a call while one runs asks for one more.
  async function draw() {
    if (drawing) {
      again = true;
      return;
    }
    drawing = true;
    try {
      do {
        again = false;
        graph.replaceChildren(await fetchSVG());
        generation++;
        document.body.dataset.generation = String(generation);
        updated.textContent = 'drawn ' + new Date().toLocaleTimeString();
      } while (again);
    } finally {
      drawing = false;
    }
  }

  function redraw() {
    draw().catch(function (e) { setState('error', e.message + ' (next change retries)'); });
  }

  // follow keeps a subscription to the events stream, reconnecting after
  // 2 s when it ends or fails (the daemon restarted), and redraws on every
  // chunk of it.
  async function follow() {
    for (;;) {
      try {
        const r = await fetch('../../events', { cache: 'no-store' });
        if (!r.ok || !r.body) {
          throw new Error('events: HTTP ' + r.status);
        }
        await draw();
        setState('live', 'live');
        const reader = r.body.getReader();
        for (;;) {
          const chunk = await reader.read();
          if (chunk.done) {
            break;
          }
          redraw();
        }
        setState('reconnecting', 'events stream ended, reconnecting…');
      } catch (e) {
        setState('reconnecting', e.message + ', reconnecting…');
      }
      await sleep(2000);
    }
  }

  follow();
})();
