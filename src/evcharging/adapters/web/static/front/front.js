// EVCharging Network public front: reads API_Central v1 straight from Central (REST for the
// first picture, the /api/v1/stream WebSocket for every change after it). Plain JS, no framework,
// nothing from the Internet; no login and no admin action. docs/dashboards.md, "Public front".
// Every figure comes from Central; driver ids arrive masked ("D**1") and are shown as they come.
// What it shares with the admin dashboard is in /static/shared/live.js (EVLive).
"use strict";

(() => {
  const { $, el, utc, row, fillTile, placeTile, dropTilesNotIn, stateSummary, requestTable, messageLog, dispatcher, liveSocket } =
    window.EVLive;
  const WATCH_EVERY_MS = 5000; // liveness check (a host that vanished sends no close)
  const WATCH_TIMEOUT_MS = 4000;
  const MODULES = [
    ["central", "Central"],
    ["kafka", "Kafka"],
    ["registry", "EV_Registry"],
    ["ev_w", "EV_W (weather office)"],
    ["weather_provider", "Weather provider"],
  ];
  const LABEL = Object.fromEntries(MODULES);
  const OUT_OF_ACTION = new Set(["Desconectado", "Averiado"]);

  let central = ""; // Central's base URL, from /config.json
  let socketOpen = false;
  let retryAt = 0;
  let everFailed = false; // Central was found unreachable at least once since the last open

  const cps = new Map(); // id -> latest CP view
  const tiles = new Map(); // id -> tile element
  let health = null; // GET /api/v1/health body
  let weather = null; // GET /api/v1/weather body
  let kafka = null; // {up, problem, since}
  const requests = requestTable("#requests-body", "#requests-empty");
  const log = messageLog("#messages");

  // --- formatting: UTC always (EVLive.utc), € for money -------------------------------------

  function celsius(t) {
    return typeof t === "number" ? `${t.toFixed(1)} °C` : "—";
  }

  // --- talking to Central -------------------------------------------------------------------

  async function getJson(path, timeoutMs = WATCH_TIMEOUT_MS) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      const answer = await fetch(`${central}${path}`, { cache: "no-store", signal: abort.signal });
      if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
      return await answer.json();
    } finally {
      clearTimeout(timer);
    }
  }

  // The first picture: every read of API_Central v1, each applied as it arrives (the stream's
  // first frames bring most of it again, so one read failing is not worth an alert).
  async function firstPicture() {
    const reads = {
      "/api/v1/cps": (b) => replaceTiles(b),
      "/api/v1/requests": (b) => renderRequests(b),
      "/api/v1/messages": (b) => log.replace(b),
      "/api/v1/weather": (b) => showWeather(b),
      "/api/v1/health": (b) => showHealth(b),
      "/api/v1/drivers": (b) => renderDrivers(b),
      "/api/v1/transactions": (b) => renderTransactions(b),
    };
    const results = await Promise.allSettled(
      Object.entries(reads).map(async ([path, apply]) => apply(await getJson(path))),
    );
    return results.some((r) => r.status === "fulfilled"); // false: Central did not answer at all
  }

  const socket = liveSocket({
    url: () => `${central.replace(/^http/, "ws")}/api/v1/stream`,
    onConnecting: () => {
      if (!socketOpen) setConn("connecting", "Connecting to Central…");
    },
    onOpen: () => {
      socketOpen = true;
      everFailed = false;
      setConn("live", `Live: connected to Central (${central})`);
      refreshSoon(0); // drivers and transactions are read by REST; the stream brings the rest
    },
    onMessage: (data) => onFrame(data),
    onLost: (delay) => lost(delay),
  });

  // Central unreachable: said at once, in the banner; the socket reconnects with backoff.
  function lost(delay) {
    socketOpen = false;
    everFailed = true;
    retryAt = Date.now() + delay;
    setConn("unreachable", `Central unreachable: reconnecting in ${Math.max(1, Math.round(delay / 1000))} s…`);
    renderModules();
    renderAlerts();
  }

  // A socket can stay "open" towards a host that has gone: ask Central now and then.
  async function watch() {
    if (!socketOpen) return;
    try {
      showHealth(await getJson("/api/v1/health"));
      refreshSoon(0);
    } catch {
      socket.drop();
    }
  }

  function setConn(status, text) {
    const pill = $("#conn-status");
    pill.dataset.status = status;
    pill.textContent = text;
    document.body.dataset.conn = status;
  }

  // --- frames from /api/v1/stream -----------------------------------------------------------

  const handlers = {
    all_cps: (m) => replaceTiles(m.charging_points),
    cps: (m) => m.charging_points.forEach(renderTile),
    requests: (m) => renderRequests(m.requests),
    request_changes: (m) => changeRequests(m.changed, m.removed),
    messages: (m) => log.replace(m.messages),
    message: (m) => log.add(m),
    kafka: (m) => showKafka(m),
    weather: (m) => showWeather(m),
    health: (m) => showHealth(m),
  };

  const onFrame = dispatcher(handlers); // a frame this page does not know: nothing to show

  // --- charging points ------------------------------------------------------------------------

  function replaceTiles(views) {
    for (const id of dropTilesNotIn(tiles, views)) cps.delete(id);
    views.forEach(renderTile);
    soon(renderAlerts);
    soon(summarise);
  }

  function activation(state) {
    if (state === "Activado" || state === "Suministrando") return ["active", "active"];
    if (state === "Parado") return ["stopped", "out of service"];
    if (state === "Averiado") return ["fault", "not active (fault)"];
    return ["off", "not active (not connected)"];
  }

  function renderTile(cp) {
    const before = cps.get(cp.id);
    cps.set(cp.id, cp);
    const tile = tiles.get(cp.id) || createTile(cp.id);
    const part = fillTile(tile, cp); // state, tone, location, price, key, session, supply
    const reasons = [];
    if (cp.stop_reason) reasons.push(`Out of service: ${cp.stop_reason}`);
    if (cp.fault_reason) reasons.push(`Fault: ${cp.fault_reason}`);
    part("reason").hidden = reasons.length === 0;
    part("reason").textContent = reasons.join(" · ");
    part("registration").textContent = cp.registered === false ? "not registered" : "registered";
    tile.dataset.registered = cp.registered === false ? "no" : "yes";
    const [active, activeText] = activation(cp.state);
    part("activation").textContent = activeText;
    tile.dataset.activation = active;
    renderTileWeather(cp, part("weather"), tile);
    part("supply").hidden = !cp.session_id || cp.session_status === "authorised";
    updateTransaction(cp);
    if (!before || before.session_id !== cp.session_id || before.session_status !== cp.session_status) {
      refreshSoon();
    }
    if (!before || before.state !== cp.state || before.fault_reason !== cp.fault_reason) {
      soon(renderAlerts);
      soon(summarise);
    }
  }

  // Work done once after a frame's CP views are applied (still before the browser paints).
  const pending = new Set();
  function soon(fn) {
    if (pending.size === 0) {
      queueMicrotask(() => {
        const todo = [...pending];
        pending.clear();
        todo.forEach((f) => f());
      });
    }
    pending.add(fn);
  }

  // The CP's weather: EV_W's alert when one stands, else its city's latest reading, if watched.
  function renderTileWeather(cp, part, tile) {
    const where = (weather?.locations || []).find((l) => (l.cps || []).includes(cp.id));
    let text = "not watched by EV_W";
    if (cp.weather_alert) {
      const w = cp.weather || {};
      text = `ALERT: ${w.city || where?.city || "?"} ${celsius(w.temperature_c)}`;
    } else if (where) {
      text = where.error ? `${where.city}: no reading (${where.error})` : `${where.city} ${celsius(where.temperature_c)}`;
    }
    part.textContent = text;
    tile.dataset.weather = cp.weather_alert ? "alert" : where ? "watched" : "none";
  }

  function createTile(id) {
    const tile = $("#tile-template").content.firstElementChild.cloneNode(true);
    tile.dataset.testid = `cp-${id}`;
    tile.dataset.cpId = id;
    for (const node of tile.querySelectorAll("[data-part]")) {
      node.dataset.testid = `cp-${id}-${node.dataset.part}`;
    }
    tile.querySelector('[data-part="id"]').textContent = id;
    return placeTile(tiles, "#tiles", id, tile);
  }

  function summarise() {
    $("#summary").textContent = stateSummary([...cps.values()].map((cp) => cp.state));
  }

  // --- alerts: Central unreachable, modules down, CPs out of action ---------------------------

  function moduleState(name) {
    if (name === "central" && !socketOpen && everFailed) {
      return { name, state: "down", since: null, detail: `unreachable at ${central}` };
    }
    const found = (health?.modules || []).find((m) => m.name === name);
    if (name === "kafka" && kafka && !kafka.up) {
      return { name, state: "down", since: found?.since || kafka.since * 1000, detail: kafka.problem };
    }
    if (name === "ev_w" && weather?.office?.state === "down" && found?.state !== "down") {
      return { name, state: "down", since: weather.office.since, detail: weather.office.detail };
    }
    if (name === "weather_provider" && weather?.provider?.state === "down" && found?.state !== "down") {
      return { name, state: "down", since: null, detail: weather.provider.detail };
    }
    return found || { name, state: "unknown", since: null, detail: "" };
  }

  function alertItem(testid, kind, text) {
    const li = el("li", { className: `alert ${kind}`, textContent: text });
    li.dataset.testid = testid;
    li.dataset.kind = kind;
    return li;
  }

  function renderAlerts() {
    const items = [];
    const centralDown = moduleState("central").state === "down";
    if (centralDown) {
      const secs = Math.max(0, Math.round((retryAt - Date.now()) / 1000));
      items.push(
        alertItem(
          "alert-central",
          "module",
          `Central unreachable (${central}): the figures below are the last ones received; ` +
            `reconnecting${secs ? ` in ${secs} s` : ""}…`,
        ),
      );
    }
    for (const [name, label] of MODULES) {
      if (name === "central") continue;
      const m = moduleState(name);
      if (m.state !== "down") continue;
      const since = m.since ? ` since ${utc(m.since)}` : "";
      const detail = m.detail ? `: ${m.detail}` : "";
      items.push(alertItem(`alert-${name}`, "module", `${label} down${since}${detail}`));
    }
    const out = [...cps.values()].filter((cp) => OUT_OF_ACTION.has(cp.state)).sort((a, b) => (a.id < b.id ? -1 : 1));
    if (out.length) {
      const li = el("li", { className: "alert cps" }, el("span", { textContent: "CPs out of action: " }));
      li.dataset.testid = "alert-cps";
      li.dataset.kind = "cps";
      for (const cp of out) {
        const chip = el("span", {
          className: `chip ${cp.state === "Averiado" ? "fault" : "off"}`,
          textContent: `${cp.id} ${cp.state}${cp.fault_reason ? ` (${cp.fault_reason})` : ""}`,
        });
        chip.dataset.testid = `alert-cp-${cp.id}`;
        chip.dataset.state = cp.state;
        li.append(chip);
      }
      items.push(li);
    }
    const list = $("#alerts");
    list.replaceChildren(...items);
    list.dataset.count = String(items.length);
    list.hidden = items.length === 0;
    $("#all-clear").hidden = items.length !== 0 || cps.size === 0;
  }

  // --- modules and weather ------------------------------------------------------------------

  function showHealth(body) {
    health = body;
    renderModules();
    renderAlerts();
  }

  function showKafka(m) {
    kafka = m;
    renderModules();
    renderAlerts();
  }

  function renderModules() {
    const rows = MODULES.map(([name, label]) => {
      const m = moduleState(name);
      const li = el(
        "li",
        { className: "module" },
        el("span", { className: "module-name", textContent: label }),
        el("span", { className: `pill ${m.state}`, textContent: m.state }),
        el("span", {
          className: "module-detail",
          textContent: [m.since ? `since ${utc(m.since)}` : "", m.detail || ""].filter(Boolean).join(" · "),
        }),
      );
      li.dataset.testid = `module-${name}`;
      li.dataset.state = m.state;
      return li;
    });
    $("#modules").replaceChildren(...rows);
  }

  function showWeather(body) {
    weather = body;
    const office = body.office || { state: "unknown", detail: "" };
    const officeEl = $("#weather-office");
    officeEl.dataset.state = office.state;
    const bits = [`EV_W: ${office.state}`];
    if (office.state === "down" && office.since) bits.push(`since ${utc(office.since)}`);
    if (office.last_report_at) bits.push(`last report ${utc(office.last_report_at)}`);
    if (office.detail) bits.push(office.detail);
    officeEl.textContent = bits.join(" · ");
    const provider = body.provider || { state: "unknown", detail: "" };
    const providerEl = $("#weather-provider");
    providerEl.dataset.state = provider.state;
    providerEl.textContent = `Weather provider: ${provider.state}${provider.detail ? ` · ${provider.detail}` : ""}`;
    const alerted = new Map((body.alerts || []).map((a) => [a.cp_id, a]));
    const rows = (body.locations || []).map((l) => {
      const temp = el("td", {
        textContent: l.error ? `no reading: ${l.error}` : celsius(l.temperature_c),
      });
      temp.dataset.testid = `weather-${l.city}-temp`;
      const freezing = typeof l.temperature_c === "number" && l.temperature_c < 0;
      const cpList = el("small", {
        className: "cps-of",
        textContent: (l.cps || []).map((id) => (alerted.has(id) ? `${id} (alert)` : id)).join(", ") || "no CP",
      });
      cpList.dataset.testid = `weather-${l.city}-cps`;
      const city = el("th", { scope: "row" }, l.city, el("br"), cpList);
      const tr = el("tr", {}, city, temp, el("td", { textContent: utc(l.at) }));
      tr.dataset.testid = `weather-${l.city}`;
      tr.dataset.error = l.error ? "yes" : "no";
      tr.className = l.error ? "error" : freezing ? "freezing" : "";
      return tr;
    });
    $("#weather-body").replaceChildren(...rows);
    $("#weather-empty").hidden = rows.length > 0;
    for (const cp of cps.values()) {
      const tile = tiles.get(cp.id);
      renderTileWeather(cp, tile.querySelector('[data-part="weather"]'), tile);
    }
    renderModules();
    renderAlerts();
  }

  // --- drivers and transactions (REST; re-read when a CP's session changes) ------------------

  let refreshTimer = null;
  let refreshing = false;
  let refreshAgain = false;

  function refreshSoon(ms = 150) {
    if (refreshTimer !== null) return;
    refreshTimer = setTimeout(refresh, ms);
  }

  async function refresh() {
    refreshTimer = null;
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    try {
      const [drivers, transactions] = await Promise.all([
        getJson("/api/v1/drivers"),
        getJson("/api/v1/transactions"),
      ]);
      renderDrivers(drivers);
      renderTransactions(transactions);
    } catch {
      // Central away: the banner says so; the tables keep the last answer
    } finally {
      refreshing = false;
      if (refreshAgain) {
        refreshAgain = false;
        refreshSoon();
      }
    }
  }

  function renderDrivers(list) {
    const rows = list.map((d) =>
      Object.assign(row({ Driver: d.id, State: d.state, CP: d.cp_id || "—" }, "driver-row"), {
        className: d.state === "idle" ? "" : "busy",
      }),
    );
    $("#drivers-body").replaceChildren(...rows);
    $("#drivers-empty").hidden = rows.length > 0;
  }

  const txRows = new Map(); // session id -> <tr>

  function renderTransactions(list) {
    txRows.clear();
    for (const t of list) {
      const tr = row(
        {
          Started: utc(t.started_at),
          CP: t.cp_id,
          Driver: t.driver_id,
          Status: t.status,
          "€/kWh": t.price_eur_per_kwh,
          kW: t.kw ?? "0",
          kWh: t.energy_kwh,
          "€": `${t.amount_eur} €`,
        },
        `tx-${t.cp_id}`,
      );
      tr.dataset.session = t.session_id;
      txRows.set(t.session_id, tr);
    }
    $("#tx-body").replaceChildren(...txRows.values());
    $("#tx-empty").hidden = txRows.size > 0;
  }

  // The live figures of a supply come with its CP's view: the row follows them between reads.
  function updateTransaction(cp) {
    const tr = cp.session_id && txRows.get(cp.session_id);
    if (!tr) return;
    const cell = (label) => tr.querySelector(`td[data-label="${label}"]`);
    if (cp.session_status) cell("Status").textContent = cp.session_status;
    if (cp.kw !== null && cp.kw !== undefined) cell("kW").textContent = cp.kw;
    if (cp.energy_kwh !== null && cp.energy_kwh !== undefined) cell("kWh").textContent = cp.energy_kwh;
    if (cp.amount_eur !== null && cp.amount_eur !== undefined) cell("€").textContent = `${cp.amount_eur} €`;
  }

  // --- requests and messages ------------------------------------------------------------------

  function renderRequests(list) {
    requests.replace(list);
    refreshSoon();
  }

  function changeRequests(changed, removed) {
    requests.change(changed, removed);
    refreshSoon();
  }

  // --- start ------------------------------------------------------------------------------------

  async function start() {
    renderModules();
    try {
      const answer = await fetch("/config.json", { cache: "no-store" });
      central = (await answer.json()).central;
    } catch {
      setConn("unreachable", "EV_Front did not say where Central is: reload the page.");
      return;
    }
    if (!(await firstPicture())) socket.lost();
    else socket.connect();
    setInterval(watch, WATCH_EVERY_MS);
    setInterval(() => {
      if (!socketOpen) renderAlerts(); // the countdown to the next attempt
    }, 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
