// EV_Central admin dashboard: renders what Central pushes over /ws and sends admin actions.
// Plain JS, no framework; what it shares with the public front is in /static/shared/live.js
// (EVLive). Protocol: docs/dashboards.md. Nothing lives only in the page: every figure comes
// from Central (a reload or a reconnect gets the full state again).
"use strict";

(() => {
  const { $, row, utc, fillTile, placeTile, dropTilesNotIn, stateSummary, requestTable, messageLog, dispatcher, liveSocket } =
    window.EVLive;
  const TOKEN_KEY = "evcharging.adminToken";

  const tiles = new Map(); // cp id -> tile element
  const requests = requestTable("#requests-body", "#requests-empty");
  const log = messageLog("#messages");
  let noticeTimer = null;

  // --- connection ---------------------------------------------------------------------

  const socket = liveSocket({
    url: () => `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`,
    onConnecting: () => setStatus("connecting", "Connecting to Central…"),
    onOpen: () => {
      setStatus("connected", "Live: connected to Central");
      if (token()) send({ type: "login" });
    },
    onMessage: (data) => onMessage(data),
    onLost: (delay) => {
      const secs = Math.max(1, Math.round(delay / 1000));
      setStatus("disconnected", `Disconnected from Central: reconnecting in ${secs} s…`);
    },
  });

  // Central connected but Kafka away: drivers' requests and CP telemetry wait; say so.
  function showKafka(m) {
    const el = $("#kafka-banner");
    el.hidden = m.up;
    el.textContent = m.up
      ? ""
      : `${m.problem} since ${utc(m.since * 1000)}: drivers' requests and CP figures wait until it is back.`;
    document.body.dataset.kafka = m.up ? "up" : "down";
    if (document.body.dataset.ws === "connected") {
      $("#ws-status").textContent = m.up
        ? "Live: connected to Central"
        : "Connected to Central, but Kafka is down: not live";
    }
  }

  // --- module health and the weather office (issue 15: `health` and `weather` frames) ---------

  const MODULES = { central: "EV_Central", registry: "EV_Registry", ev_w: "EV_W (weather office)", weather_provider: "the weather provider" };
  const OWN_BANNER = new Set(["kafka", "ev_w", "weather_provider"]); // said by their own banners

  // "Teruel, -3 °C" (the city alone when the alert came without a reading).
  function where(w) {
    return w.temperature_c === null || w.temperature_c === undefined
      ? w.city
      : `${w.city}, ${w.temperature_c} °C`;
  }

  // A module down: Kafka has the banner above; EV_W and its provider the weather banner.
  function showHealth(m) {
    const down = (m.modules || []).filter((mod) => mod.state === "down" && !OWN_BANNER.has(mod.name));
    const el = $("#health-banner");
    el.hidden = down.length === 0;
    el.textContent = down
      .map((mod) => {
        const since = mod.since ? ` since ${utc(mod.since)}` : "";
        return `${MODULES[mod.name] || mod.name} is down${since}${mod.detail ? `: ${mod.detail}` : ""}.`;
      })
      .join(" ");
    document.body.dataset.health = down.map((mod) => mod.name).join(" ");
  }

  function showWeather(m) {
    const office = m.office || {};
    const provider = m.provider || {};
    const alerts = m.alerts || [];
    const keep = "CPs keep their last weather decision.";
    const line = (testid, text) => {
      const p = document.querySelector(`#weather-banner [data-testid="${testid}"]`);
      p.hidden = !text;
      p.textContent = text || "";
    };
    line(
      "weather-office",
      office.state === "down"
        ? `EV_W (weather office) is down${office.since ? ` since ${utc(office.since)}` : ""}` +
            `${office.detail ? `: ${office.detail}` : ""}. ${keep}`
        : "",
    );
    line(
      "weather-provider",
      provider.state === "down"
        ? `The weather provider is down${provider.detail ? `: ${provider.detail}` : ""}. ${keep}`
        : "",
    );
    line(
      "weather-alerts",
      alerts.length
        ? `Weather alert at ${alerts.map((a) => `${a.cp_id} (${where(a)})`).join(", ")}.`
        : "",
    );
    const el = $("#weather-banner");
    const troubled = office.state === "down" || provider.state === "down";
    el.hidden = !troubled && alerts.length === 0;
    el.dataset.tone = troubled ? "warn" : "info";
  }

  function setStatus(status, text) {
    const el = $("#ws-status");
    el.dataset.status = status;
    el.textContent = text;
    document.body.dataset.ws = status;
    $("#stale-note").hidden = status !== "disconnected" || tiles.size === 0;
  }

  function send(action) {
    const sent = socket.send({ ...action, token: token() });
    if (!sent) notify("Not connected to Central: the action was not sent.", true);
    return sent;
  }

  // --- messages from Central ------------------------------------------------------------

  // Central's answers to the page's own admin actions (services/admin.py names them).
  const REPLIES = [
    "error_simulated", "error_fixed", "cp_stopped", "cp_resumed", "all_stopped", "all_resumed",
    "keys_revoked", "keys_rotated", "status_asked", "reset_asked",
  ];

  const handlers = {
    ...Object.fromEntries(REPLIES.map((type) => [type, onReply])),
    weather: (m) => showWeather(m),
    health: (m) => showHealth(m),
    all_cps: (m) => replaceTiles(m.charging_points),
    cps: (m) => m.charging_points.forEach(renderTile),
    requests: (m) => requests.replace(m.requests),
    request_changes: (m) => requests.change(m.changed, m.removed),
    messages: (m) => log.replace(m.messages),
    message: (m) => log.add(m),
    kafka: (m) => showKafka(m),
    logged_in: () => setLogin(true, "Logged in"),
    cp_registered: (m) => {
      onReply(m);
      $("#register").reset();
    },
    cp_edited: (m) => {
      onReply(m);
      $("#edit").reset();
    },
    error: (m) => onError(m),
  };

  const onMessage = dispatcher(handlers); // a frame type this page does not know is ignored

  function onReply(msg) {
    // REPLIES, cp_registered, cp_edited
    if (msg.cp) renderTile(msg.cp);
    if (msg.message) notify(msg.message, false);
    setLogin(true, "Logged in");
  }

  function onError(msg) {
    // Also what Central answers an action that makes no sense in the CP's state (as HTTP's 409).
    const reason = msg.reason || "refused";
    if (/admin token/.test(reason)) {
      sessionStorage.removeItem(TOKEN_KEY);
      setLogin(false, reason === "wrong admin token" ? "Wrong token" : "Not logged in");
    }
    notify(`Refused${msg.action ? ` (${msg.action})` : ""}: ${reason}`, true);
  }

  // --- tiles ----------------------------------------------------------------------------

  function replaceTiles(views) {
    dropTilesNotIn(tiles, views);
    views.forEach(renderTile);
  }

  function renderTile(cp) {
    const el = tiles.get(cp.id) || createTile(cp.id);
    const part = fillTile(el, cp); // state, tone (ok, stopped, fault or off), key, session, supply
    part("unregistered").hidden = cp.registered !== false; // no credentials from EV_Registry
    const stopped = part("stop-reason"); // why a Parado CP is out of service, as Central says
    const reasons = cp.stop_reason ? cp.stop_reason.split("; ") : [];
    const weather = cp.weather ? `weather alert (${where(cp.weather)})` : "weather alert";
    stopped.hidden = reasons.length === 0;
    stopped.textContent = reasons.length
      ? `Out of service: ${reasons.map((r) => (r === "weather alert" ? weather : r)).join("; ")}`
      : "";
    // An alert that does not stop the CP (yet): a supply under way finishes first.
    const note = part("weather");
    const pending = Boolean(cp.weather_alert) && !reasons.includes("weather alert");
    note.hidden = !pending;
    note.textContent = !pending
      ? ""
      : cp.session_id
        ? `Weather alert (${where(cp.weather || { city: "?" })}): out of service once this supply ends`
        : `Weather alert (${where(cp.weather || { city: "?" })})`;
    el.dataset.weather = cp.weather_alert ? "alert" : "none";
    const fault = part("fault");
    fault.hidden = !cp.fault_reason;
    fault.textContent = cp.fault_reason ? `Fault: ${cp.fault_reason}` : "";
    part("supply").hidden = !cp.session_id;
    // Central's rule (domain/admin_rules.py) says which actions make sense now: only they are on.
    const allowed = new Set(cp.actions || []);
    el.dataset.actions = [...allowed].join(" ");
    for (const button of el.querySelectorAll("button[data-action]")) {
      button.disabled = !allowed.has(button.dataset.action);
      button.title = button.disabled ? whyOff(button.dataset.action, cp) : "";
    }
    summarise();
  }

  // A hint on a disabled button (Central's own reason comes back if the action is sent anyway).
  function whyOff(action, cp) {
    if (action === "stop_cp") return "Already stopped";
    if (action === "resume_cp") return "Not stopped";
    if (action === "fix_error") return "No simulated error to fix";
    if (action === "revoke_keys") return "Keys already revoked: its Monitor must authenticate again";
    if (action === "report_status" || action === "reset_cp") {
      return cp.keys_revoked
        ? "Keys revoked: nothing reaches it until its Monitor authenticates again"
        : `${cp.state}: no Monitor link, nothing would hear it`;
    }
    return cp.error_simulated ? "An error is already simulated" : `${cp.state}: not connected`;
  }

  function cpsWhere(action) {
    return [...tiles.values()].filter((el) => el.dataset.actions.split(" ").includes(action));
  }

  function createTile(id) {
    const el = $("#tile-template").content.firstElementChild.cloneNode(true);
    el.dataset.testid = `tile-${id}`;
    el.dataset.cpId = id;
    el.querySelector(".cp-id").textContent = id;
    for (const name of ["state", "kwh", "kw", "eur", "driver", "unregistered", "key", "stop-reason", "weather"]) {
      el.querySelector(`[data-part="${name}"]`).dataset.testid = `tile-${id}-${name}`;
    }
    const ids = {
      stop_cp: "stop",
      resume_cp: "resume",
      simulate_error: "error",
      fix_error: "fix",
      revoke_keys: "revoke",
      report_status: "report",
      reset_cp: "reset",
    };
    for (const button of el.querySelectorAll("[data-action]")) {
      button.dataset.testid = `${ids[button.dataset.action]}-${id}`;
      button.setAttribute("aria-label", `${button.textContent} ${id}`);
    }
    return placeTile(tiles, "#tiles", id, el);
  }

  function summarise() {
    let stoppable = 0;
    let resumable = 0;
    for (const el of tiles.values()) {
      const actions = el.dataset.actions.split(" ");
      if (actions.includes("stop_cp")) stoppable += 1;
      if (actions.includes("resume_cp")) resumable += 1;
    }
    $("#summary").textContent = stateSummary([...tiles.values()].map((el) => el.dataset.state));
    $("#stop-all").disabled = stoppable === 0; // the bulk buttons follow the states too
    $("#resume-all").disabled = resumable === 0;
  }

  // --- login, notices, actions -----------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function setLogin(ok, text) {
    const el = $("#login-state");
    el.dataset.logged = ok ? "yes" : "no";
    el.textContent = text;
  }

  function notify(text, isError) {
    const el = $("#notice");
    clearTimeout(noticeTimer);
    el.textContent = text;
    el.dataset.kind = isError ? "error" : "ok";
    el.setAttribute("role", isError ? "alert" : "status");
    el.hidden = false;
    if (!isError) noticeTimer = setTimeout(() => { el.hidden = true; }, 8000);
  }

  function bind() {
    $("#login").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("#token-input").value.trim();
      if (!value) {
        notify("Enter the admin token first.", true);
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, value);
      $("#token-input").value = "";
      setLogin(false, "Checking…");
      send({ type: "login" });
    });
    $("#token-clear").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      setLogin(false, "Not logged in");
      socket.drop(); // the socket was the admin's: a new one sees the masked views again
    });
    $("#stop-all").addEventListener("click", askStopAll);
    $("#confirm-no").addEventListener("click", () => {
      confirming = null;
      $("#confirm").close();
    });
    $("#confirm-yes").addEventListener("click", () => {
      const action = confirming;
      confirming = null;
      $("#confirm").close();
      if (action) send(action);
    });
    $("#confirm-alt").addEventListener("click", () => {
      const action = confirmingAlt;
      confirming = null;
      $("#confirm").close();
      if (action) send(action);
    });
    $("#confirm").addEventListener("close", () => {
      confirming = null; // Esc: nothing is sent
      confirmingAlt = null;
    });
    $("#resume-all").addEventListener("click", () => send({ type: "resume_all" }));
    $("#rotate-keys").addEventListener("click", () => send({ type: "rotate_keys" }));
    $("#tiles").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const action = { type: button.dataset.action, cp_id: button.closest(".tile").dataset.cpId };
      if (action.type === "simulate_error") action.error_type = "fault";
      if (action.type === "revoke_keys") askRevoke(action);
      else if (action.type === "reset_cp") askReset(action);
      else send(action);
    });
    $("#register").addEventListener("submit", (event) => {
      event.preventDefault();
      const form = new FormData(event.target);
      send({
        type: "register_cp",
        cp_id: form.get("cp_id").trim(),
        location: form.get("location").trim(),
        price_eur_per_kwh: form.get("price_eur_per_kwh").trim().replace(",", "."),
      });
    });
    $("#edit").addEventListener("submit", (event) => {
      event.preventDefault();
      const form = new FormData(event.target);
      const action = { type: "edit_cp", cp_id: form.get("cp_id").trim() };
      const location = form.get("location").trim();
      const price = form.get("price_eur_per_kwh").trim().replace(",", ".");
      if (location) action.location = location;
      if (price) action.price_eur_per_kwh = price;
      if (!location && !price) {
        notify("Give a new location or a new €/kWh (or both).", true);
        return;
      }
      send(action);
    });
  }

  // --- audit log: GET /api/audit with the admin token, refreshed while its panel is open ------

  const AUDIT_EVERY_MS = 3000;
  const AUDIT_ROWS = 100;
  let auditTimer = null;
  let auditAsked = 0; // the latest request: an older answer arriving late is dropped

  function auditState(text) {
    $("#audit-state").textContent = text;
  }

  function auditRow(r) {
    const tr = row({
      Time: `${new Date(r.at).toISOString().slice(0, 10)} ${utc(r.at)}`,
      Action: r.outcome === "ok" ? r.action : `${r.action} (${r.outcome})`,
      Who: r.actor,
      IP: r.ip,
      CP: r.cp_id || "—",
      Detail: r.detail,
    });
    tr.className = r.outcome === "ok" ? "" : "denied";
    tr.dataset.action = r.action;
    return tr;
  }

  function refusalText(status, body) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && Array.isArray(body.detail)) {
      return body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
    }
    return `HTTP ${status}`;
  }

  async function loadAudit() {
    if (!$("#audit").open) return;
    const asked = ++auditAsked;
    if (!token()) {
      $("#audit-body").replaceChildren();
      auditState("Log in with the admin token to read the audit log.");
      return;
    }
    const form = new FormData($("#audit-filters"));
    const query = new URLSearchParams({ limit: String(AUDIT_ROWS) });
    for (const name of ["action", "cp", "ip"]) {
      const value = (form.get(name) || "").trim();
      if (value) query.set(name, value);
    }
    let answer;
    let body = null;
    try {
      answer = await fetch(`/api/audit?${query}`, {
        headers: { Authorization: `Bearer ${token()}` },
        cache: "no-store",
      });
      body = await answer.json();
    } catch {
      if (asked === auditAsked) auditState("Central is unreachable: the audit log was not read.");
      return;
    }
    if (asked !== auditAsked) return;
    if (!answer.ok) {
      auditState(`Refused: ${refusalText(answer.status, body)}`);
      return;
    }
    $("#audit-body").replaceChildren(...body.map(auditRow));
    auditState(
      body.length ? `${body.length} latest rows, newest first (read ${utc(Date.now())})` : "No rows match.",
    );
  }

  function bindAudit() {
    const select = $("#audit-action");
    for (const action of select.dataset.actions.split(" ").filter(Boolean)) {
      select.append(Object.assign(document.createElement("option"), { value: action, textContent: action }));
    }
    $("#audit").addEventListener("toggle", () => {
      clearInterval(auditTimer);
      auditTimer = null;
      if ($("#audit").open) {
        loadAudit();
        auditTimer = setInterval(loadAudit, AUDIT_EVERY_MS);
      }
    });
    $("#audit-filters").addEventListener("submit", (event) => {
      event.preventDefault();
      loadAudit();
    });
    select.addEventListener("change", loadAudit);
  }

  // The destructive actions are confirmed in the page's own dialog first: the action to send on
  // "yes" waits here (Cancel, Esc or a closed dialog send nothing).
  // `alt`, when given, is a second way to say yes ({ action, label }), on its own button.
  let confirming = null;
  let confirmingAlt = null;

  function confirmThen(action, title, text, yes, alt = null) {
    confirming = action;
    confirmingAlt = alt ? alt.action : null;
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    $("#confirm-yes").textContent = yes;
    $("#confirm-alt").hidden = !alt;
    $("#confirm-alt").textContent = alt ? alt.label : "";
    $("#confirm").showModal();
  }

  // STOP ALL ends every supply at once.
  function askStopAll() {
    const stoppable = cpsWhere("stop_cp");
    const supplying = stoppable.filter((el) => el.dataset.state === "Suministrando").length;
    const cps = stoppable.length === 1 ? "1 CP" : `${stoppable.length} CPs`;
    const supplies = supplying === 1 ? "1 supply" : `${supplying} supplies`;
    confirmThen(
      { type: "stop_all" },
      "Stop all charging points?",
      `${cps} will be stopped (Out of Order)` +
        (supplying ? `; ${supplies} in progress will end now, with a ticket.` : ".") +
        " CPs already stopped are left as they are.",
      "Stop all",
    );
  }

  // "Restaurar claves": the CP is out of service until its Monitor authenticates again.
  function askRevoke(action) {
    const supplying = tiles.get(action.cp_id)?.dataset.state === "Suministrando";
    confirmThen(
      action,
      `Revoke the keys of ${action.cp_id}?`,
      (supplying ? "Its supply in progress will end now, with a ticket. " : "") +
        `${action.cp_id} will be out of service (Parado, "keys revoked") until its Monitor ` +
        "authenticates again; anything still sent with its old key is refused.",
      "Revoke keys",
    );
  }

  // A reset restarts the charger (an OCPP charger: Reset): soft, or hard on the second button.
  function askReset(action) {
    const supplying = tiles.get(action.cp_id)?.dataset.state === "Suministrando";
    confirmThen(
      { ...action, hard: false },
      `Reset ${action.cp_id}?`,
      `${action.cp_id} will be asked to restart` +
        (supplying ? "; its supply in progress ends the way the charger reports it." : ".") +
        " A soft reset lets the charger stop cleanly; a hard reset restarts it at once.",
      "Soft reset",
      { action: { ...action, hard: true }, label: "Hard reset" },
    );
  }

  function start() {
    bind();
    bindAudit();
    if (token()) setLogin(false, "Token saved: checking…");
    socket.connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
