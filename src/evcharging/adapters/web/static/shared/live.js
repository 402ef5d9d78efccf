// EVCharging Network: what the admin dashboard (admin.js) and the public front (front.js) share,
// so that each rule has one home: times in UTC, a CP tile's common parts (Central's tone and
// caption, the live supply), the table of driver requests, the message log, the frames'
// dispatch with their delays, and the WebSocket that reconnects with backoff. Plain JS, no
// framework; loaded (defer) before the page's own script, it defines `window.EVLive`.
"use strict";

window.EVLive = (() => {
  const MAX_LOG = 300; // the message log keeps the latest lines
  const MAX_DELAYS = 10000;

  const $ = (sel) => document.querySelector(sel);

  // An element with its properties and children: el("td", { textContent: "x" }).
  function el(tag, props = {}, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  }

  // "14:03:05 UTC" from an ISO text or epoch ms; never browser-local. Nothing known: "—".
  function utc(when) {
    if (when === null || when === undefined || when === "") return "—";
    const date = new Date(when);
    if (Number.isNaN(date.getTime())) return "—";
    return `${date.toISOString().slice(11, 19)} UTC`;
  }

  // A table row, one cell per label (the label is kept on the cell: narrow layouts show it).
  function row(cells, testid = null) {
    const tr = el("tr");
    if (testid) tr.dataset.testid = testid;
    for (const [label, value] of Object.entries(cells)) {
      const td = el("td", { textContent: value ?? "—" });
      td.dataset.label = label;
      tr.append(td);
    }
    return tr;
  }

  // --- a CP tile's common parts: what Central's view says, shown alike on both pages ----------

  // The tile's look is Central's tone (ok, stopped, fault, off): the page keeps no state map.
  function fillTile(tile, cp) {
    const part = (name) => tile.querySelector(`[data-part="${name}"]`);
    tile.dataset.state = cp.state;
    tile.className = `tile ${cp.tone || "off"}`;
    part("state").textContent = cp.caption && cp.caption !== cp.state ? `${cp.caption} · ${cp.state}` : cp.state;
    part("location").textContent = cp.location;
    part("price").textContent = cp.price_eur_per_kwh;
    part("key").textContent = cp.key || "no key"; // "key v3", "no key", "keys revoked": never the key
    tile.dataset.keys = cp.keys_revoked ? "revoked" : "held";
    const waiting = cp.session_status === "authorised";
    part("session").hidden = !waiting;
    part("session").textContent = waiting ? `Authorised for ${cp.driver_id}: waiting for plug-in` : "";
    part("driver").textContent = cp.driver_id || "—";
    part("kw").textContent = cp.kw ?? "0";
    part("kwh").textContent = cp.energy_kwh ?? "0";
    part("eur").textContent = cp.amount_eur ?? "0.00";
    return part;
  }

  // The tiles (`tiles`: cp id -> element) stay in id order in the list `listSel`.
  function placeTile(tiles, listSel, id, tile) {
    const after = [...tiles.keys()].sort().find((other) => other > id);
    $(listSel).insertBefore(tile, after ? tiles.get(after) : null);
    tiles.set(id, tile);
    return tile;
  }

  // The whole list again (`all_cps`): the tiles of CPs not in it go. Returns their ids.
  function dropTilesNotIn(tiles, views) {
    const seen = new Set(views.map((v) => v.id));
    const gone = [...tiles.keys()].filter((id) => !seen.has(id));
    for (const id of gone) {
      tiles.get(id).remove();
      tiles.delete(id);
    }
    return gone;
  }

  // "3 CPs: 1 Activado · 2 Parado"
  function stateSummary(states) {
    const counts = {};
    let total = 0;
    for (const state of states) {
      counts[state] = (counts[state] || 0) + 1;
      total += 1;
    }
    const parts = Object.keys(counts).sort().map((s) => `${counts[s]} ${s}`);
    return `${total} CPs: ${parts.join(" · ")}`;
  }

  // --- the table of driver requests: whole (`requests`) or by changes (`request_changes`) -------

  function requestTable(bodySel, emptySel) {
    const rows = new Map(); // row key -> <tr>, in the order Central first showed them
    const line = (r) => row({ Date: r.date, Start: r.start, Driver: r.driver_id, CP: r.cp_id, Status: r.status });
    const showEmpty = () => {
      $(emptySel).hidden = rows.size > 0;
    };
    return {
      replace(list) {
        rows.clear();
        list.forEach((r, i) => rows.set(r.key ?? `row-${i}`, line(r)));
        $(bodySel).replaceChildren(...rows.values());
        showEmpty();
      },
      change(changed, removed) {
        for (const key of removed) {
          rows.get(key)?.remove();
          rows.delete(key);
        }
        for (const r of changed) {
          const tr = line(r);
          const old = rows.get(r.key);
          if (old) old.replaceWith(tr);
          else $(bodySel).append(tr);
          rows.set(r.key, tr);
        }
        showEmpty();
      },
    };
  }

  // --- Central's message log, newest first; warnings marked "!" --------------------------------

  function logItem(m) {
    const li = el("li", { className: `level-${m.level}` });
    li.dataset.level = m.level;
    li.append(el("time", { dateTime: m.at, textContent: utc(m.at) }), " ", el("span", { textContent: m.text }));
    if (m.level !== "info") li.prepend(el("b", { textContent: "! " }));
    return li;
  }

  function messageLog(listSel) {
    return {
      replace(items) {
        $(listSel).replaceChildren(...items.slice(-MAX_LOG).reverse().map(logItem));
      },
      add(m) {
        const log = $(listSel);
        log.prepend(logItem(m));
        while (log.children.length > MAX_LOG) log.lastElementChild.remove();
      },
    };
  }

  // --- frames: one handler per type; `window.evDelays` holds, per frame applied, the ms from
  // Central's stamp (msg.ts) to the page having applied it -------------------------------------

  window.evDelays = [];

  function dispatcher(handlers) {
    return (data) => {
      let msg;
      try {
        msg = JSON.parse(data);
      } catch {
        return;
      }
      const handler = handlers[msg.type];
      if (!handler) return; // a frame type this page does not know: nothing to show
      handler(msg);
      if (typeof msg.ts === "number") {
        window.evDelays.push(Date.now() - msg.ts);
        if (window.evDelays.length > MAX_DELAYS) window.evDelays.shift();
      }
    };
  }

  // --- the socket to Central: reconnects by itself with backoff (0.5 s, 1 s, 2 s … at most 10 s,
  // plus jitter). The page says what to show: connecting, open, lost (with the delay) ------------

  function liveSocket({ url, onConnecting, onOpen, onMessage, onLost }) {
    let socket = null;
    let attempt = 0;
    let retryTimer = null;

    function connect() {
      clearTimeout(retryTimer);
      retryTimer = null;
      onConnecting();
      let ws;
      try {
        ws = new WebSocket(url());
      } catch {
        lost();
        return;
      }
      socket = ws;
      ws.onopen = () => {
        if (socket !== ws) return;
        attempt = 0;
        onOpen();
      };
      ws.onmessage = (event) => onMessage(event.data);
      ws.onclose = () => {
        if (socket !== ws) return;
        socket = null;
        lost();
      };
      ws.onerror = () => ws.close();
    }

    function lost() {
      const delay = Math.min(10000, 500 * 2 ** attempt) + Math.floor(Math.random() * 250);
      attempt += 1;
      clearTimeout(retryTimer);
      retryTimer = setTimeout(connect, delay);
      onLost(delay);
    }

    return {
      connect,
      lost, // Central did not answer some other way (no socket yet): try again later
      // A socket that looks open towards a host that has gone: give it up now, and reconnect.
      drop() {
        if (!socket) return;
        const ws = socket;
        socket = null;
        ws.close();
        lost();
      },
      // The action as JSON, if the socket is open (false: not sent).
      send(action) {
        if (!socket || socket.readyState !== WebSocket.OPEN) return false;
        socket.send(JSON.stringify(action));
        return true;
      },
    };
  }

  return Object.freeze({
    $,
    el,
    utc,
    row,
    fillTile,
    placeTile,
    dropTilesNotIn,
    stateSummary,
    requestTable,
    messageLog,
    dispatcher,
    liveSocket,
  });
})();
