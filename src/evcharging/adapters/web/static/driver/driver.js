// EV Driver dashboard. Plain JS, no build step. The server owns every piece of state: the page
// renders what /ws sends (the whole driver state first, then updates that each carry it again),
// so a reload or a reconnect shows the same thing. Protocol: docs/dashboard-driver.md.
"use strict";

(() => {
  const ID_RE = new RegExp(`^(?:${document.documentElement.dataset.idPattern})$`);  // the server's rule
  const MAX_NOTES = 100;
  const MAX_FILE_BYTES = 64000;

  const $ = (id) => document.getElementById(id);
  const el = {
    wsStatus: $("ws-status"), banner: $("banner"), kafkaBanner: $("kafka-banner"),
    form: $("driver-form"), input: $("driver-id-input"), following: $("following"), pageError: $("page-error"),
    status: $("status"), detail: $("status-detail"), kw: $("kw"), kwh: $("kwh"), eur: $("eur"),
    stop: $("stop"), balance: $("balance"), balanceUnit: $("balance-unit"),
    ticket: $("ticket"), ticketTitle: $("h-ticket"), ticketCp: $("ticket-cp"), ticketKwh: $("ticket-kwh"),
    ticketPrice: $("ticket-price"), ticketEur: $("ticket-eur"), ticketReason: $("ticket-reason"),
    ticketEnded: $("ticket-ended"), ticketBalance: $("ticket-balance"),
    servicesInput: $("services-input"), servicesFile: $("services-file"), servicesRun: $("services-run"),
    servicesStatus: $("services-status"), pause: $("pause"),
    cpList: $("cp-list"), cpEmpty: $("cp-empty"), notes: $("notifications"), notesEmpty: $("notes-empty"),
  };

  let ws = null;
  let connected = false;
  let attempt = 0;
  let driverId = null; // the driver this page follows (kept in the URL: ?driver=D001)
  let driver = null; // that driver's state, as the server last sent it
  let lastSeq = 0;
  const board = new Map();

  // --- connection ---------------------------------------------------------------------------

  function wsUrl() {
    const url = new URL("ws", window.location.href);
    url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    return url.href;
  }

  function connect() {
    setConnection("connecting");
    ws = new WebSocket(wsUrl());
    ws.addEventListener("open", () => {
      attempt = 0;
      connected = true;
      setConnection("open");
      if (driverId) send({ type: "select_driver", driver_id: driverId });
      render();
    });
    ws.addEventListener("message", (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch { return; }
      handle(msg);
    });
    ws.addEventListener("close", () => {
      connected = false;
      ws = null;
      const delay = Math.min(5000, 500 * 2 ** attempt);
      attempt += 1;
      setConnection("closed", delay);
      render();
      window.setTimeout(connect, delay);
    });
  }

  function send(msg) {
    if (ws && connected) ws.send(JSON.stringify(msg));
  }

  function setConnection(state, delay) {
    const labels = { connecting: "Connecting…", open: "Connected", closed: "Reconnecting…" };
    const tones = { connecting: "neutral", open: "ok", closed: "warn" };
    el.wsStatus.textContent = labels[state];
    el.wsStatus.dataset.tone = tones[state];
    if (state === "closed") {
      el.banner.textContent = `Connection to the Driver app lost: reconnecting in ${Math.round(delay / 100) / 10} s…`;
      el.banner.hidden = false;
    } else if (state === "open") {
      el.banner.hidden = true;
    }
  }

  // --- messages from the server ----------------------------------------------------------------

  function handle(msg) {
    switch (msg.type) {
      case "welcome":
        // A page opened without ?driver= follows the driver the app was started for.
        if (!driverId && msg.default_driver_id) follow(msg.default_driver_id);
        if (msg.pause_s !== undefined) el.pause.textContent = String(msg.pause_s);
        break;
      case "kafka":
        // Kafka unreachable at the Driver app: figures are not live, requests wait.
        el.kafkaBanner.hidden = msg.up;
        el.kafkaBanner.textContent = msg.up
          ? ""
          : `${msg.problem} since ${utc(new Date(msg.since * 1000).toISOString())}: ` +
            "live figures and answers resume when it is back; a supply goes on at the CP.";
        break;
      case "board":
        board.clear();
        for (const cp of msg.cps) board.set(cp.cp_id, cp);
        renderBoard();
        break;
      case "cp_status":
        if (msg.cp) board.set(msg.cp.cp_id, msg.cp);
        renderBoard();
        break;
      case "state":
        if (msg.driver_id !== driverId) return;
        lastSeq = msg.seq;
        driver = msg.state;
        renderNotes(msg.notifications);
        render();
        break;
      case "accepted":
        showError(null);
        if (msg.action === "run_services") el.servicesStatus.textContent = "Services file accepted.";
        break;
      case "error":
        showError(msg.reason);
        break;
      default:
        if (!msg.driver_id || msg.driver_id !== driverId) return;
        if (msg.notification && msg.seq > lastSeq) addNote(msg.notification);
        lastSeq = Math.max(lastSeq, msg.seq || 0);
        driver = msg.state;
        render();
    }
  }

  // --- actions ---------------------------------------------------------------------------------

  function follow(id) {
    driverId = id;
    el.input.value = id;
    driver = null;
    lastSeq = 0;
    renderNotes([]);
    const url = new URL(window.location.href);
    url.searchParams.set("driver", id);
    window.history.replaceState(null, "", url.href);
    showError(null);
    send({ type: "select_driver", driver_id: id });
    render();
  }

  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = el.input.value.trim();
    if (!ID_RE.test(id)) {
      showError("A driver id is 1 to 64 letters, digits or _ . : -");
      return;
    }
    follow(id);
  });

  el.stop.addEventListener("click", () => send({ type: "stop" }));

  el.cpList.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-cp]");
    if (button) send({ type: "request", cp_id: button.dataset.cp });
  });

  el.servicesRun.addEventListener("click", () => {
    const text = el.servicesInput.value;
    if (!text.trim()) {
      showError("Write or load at least one CP id.");
      return;
    }
    send({ type: "run_services", text });
  });

  el.servicesFile.addEventListener("change", () => {
    const file = el.servicesFile.files[0];
    if (!file) return;
    if (file.size > MAX_FILE_BYTES) {
      showError(`That file is too big (${file.size} bytes; at most ${MAX_FILE_BYTES}).`);
      return;
    }
    file.text().then((text) => { el.servicesInput.value = text; });
  });

  // --- rendering -------------------------------------------------------------------------------

  const STATUS_TONES = {
    "ERROR EN CP": "error",
    Supplying: "ok",
    "Charging completed": "ok",
    "Charging interrupted": "warn",
    "Unknown driver": "warn",
    "No news from CENTRAL": "warn",
    Authorised: "info",
    "Waiting for CENTRAL": "info",
    Denied: "warn",
    "No answer from CENTRAL": "warn",
    "Service failed": "warn",
  };

  function render() {
    renderDriver();
    renderBoard();
  }

  function renderDriver() {
    const d = driver;
    if (!driverId) {
      el.following.textContent = "Choose the driver id to follow.";
    } else if (!d) {
      el.following.textContent = `Following ${driverId}: loading…`;
    } else {
      el.following.textContent = d.listening
        ? `Following ${driverId}.`
        : `Following ${driverId}: connecting to Kafka, requests wait until then…`;
    }
    el.status.textContent = d ? d.status : driverId ? "Loading…" : "No driver";
    el.status.dataset.tone = d ? STATUS_TONES[d.status] || "neutral" : "neutral";
    el.detail.textContent = d ? d.detail : "Follow a driver to see its supply.";
    const f = d && d.figures;
    el.kw.textContent = f ? f.kw : "—";
    el.kwh.textContent = f ? f.energy_kwh : "—";
    el.eur.textContent = f ? f.amount_eur : "—";
    el.stop.disabled = !(connected && d && d.can_stop);
    const balance = d && d.balance_eur !== null ? d.balance_eur : null;
    el.balance.textContent = balance === null ? "—" : balance;
    el.balanceUnit.hidden = balance === null;
    renderTicket(d && d.ticket);
    renderServices(d && d.services);
    el.servicesRun.disabled = !(connected && d && !(d.services && d.services.running));
  }

  function renderTicket(t) {
    el.ticket.hidden = !t;
    if (!t) return;
    el.ticketTitle.textContent = `Ticket · ${t.outcome}${t.earlier ? " (an earlier session)" : ""}`;
    el.ticket.classList.toggle("interrupted", t.interrupted);
    el.ticketCp.textContent = t.cp_id;
    el.ticketKwh.textContent = t.energy_kwh;
    el.ticketPrice.textContent = t.price_eur_per_kwh;
    el.ticketEur.textContent = t.amount_eur;
    el.ticketReason.textContent = t.end_reason.replaceAll("_", " ");
    el.ticketReason.dataset.reason = t.end_reason;
    el.ticketEnded.textContent = utc(t.ended_at, true);
    el.ticketBalance.textContent = t.balance_eur;
  }

  function renderServices(s) {
    if (!s) {
      el.servicesStatus.textContent = "";
    } else if (s.running) {
      el.servicesStatus.textContent = `Running ${s.cp_ids.length} service(s): ${s.cp_ids.join(", ")}.`;
    } else {
      el.servicesStatus.textContent = `Last services file done (${s.cp_ids.join(", ")}).`;
    }
  }

  const rows = new Map(); // cp_id -> its <li>, updated in place so a click never hits a stale node

  function cpRow(cpId) {
    let row = rows.get(cpId);
    if (row) return row;
    const li = document.createElement("li");
    li.dataset.testid = `cp-${cpId}`;
    const tags = document.createElement("div");
    tags.className = "cp-tags";
    const state = span("tag", "");
    const mine = span("tag", "your CP");
    mine.dataset.tone = "info";
    tags.append(state, mine);
    const meta = span("cp-meta", "");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "cp-request";
    button.textContent = "Request";
    button.dataset.cp = cpId;
    button.dataset.testid = `request-${cpId}`;
    button.setAttribute("aria-label", `Request a supply at ${cpId}`);
    li.append(span("cp-id", cpId), tags, meta, button);
    row = { li, state, mine, meta, button };
    rows.set(cpId, row);
    return row;
  }

  function renderBoard() {
    const cps = [...board.values()].sort((a, b) => a.cp_id.localeCompare(b.cp_id));
    el.cpEmpty.hidden = cps.length > 0;
    const canRequest = connected && driver && driver.can_request;
    for (const cp of cps) {
      const row = cpRow(cp.cp_id);
      row.li.dataset.state = cp.state;
      row.state.textContent = cp.tag; // e.g. "Activado · available", worded by the server
      row.state.dataset.tone = cp.tone;
      const mine = Boolean(driver && driver.cp_id === cp.cp_id && driver.phase !== "idle");
      row.li.classList.toggle("mine", mine);
      row.mine.hidden = !mine;
      row.meta.textContent = `${cp.location} · ${cp.price_eur_per_kwh} €/kWh`;
      row.button.disabled = !(canRequest && cp.available);
    }
    const wanted = cps.map((cp) => rows.get(cp.cp_id).li);
    const current = [...el.cpList.children];
    if (wanted.length !== current.length || wanted.some((li, i) => li !== current[i])) {
      el.cpList.replaceChildren(...wanted);
    }
  }

  // Every time on the page is UTC, labelled so: the same clock as Central's screens and logs.
  function utc(iso, withDate) {
    const text = new Date(iso).toISOString(); // 2026-12-01T14:03:05.123Z
    const time = `${text.slice(11, 19)} UTC`;
    return withDate ? `${text.slice(0, 10)} ${time}` : time;
  }

  function span(className, text) {
    const node = document.createElement("span");
    node.className = className;
    node.textContent = text;
    return node;
  }

  const LEVEL_WORDS = { error: "Error", warning: "Warning", success: "OK", info: "Info" };
  const LEVEL_TONES = { error: "error", warning: "warn", success: "ok", info: "info" };

  function noteItem(n) {
    const li = document.createElement("li");
    li.dataset.level = n.level;
    li.dataset.kind = n.kind;
    const time = document.createElement("time");
    time.dateTime = n.at;
    time.textContent = utc(n.at);
    const tag = span("tag", LEVEL_WORDS[n.level] || n.level);
    tag.dataset.tone = LEVEL_TONES[n.level] || "neutral";
    const head = document.createElement("div");
    head.className = "row";
    head.append(time, tag);
    li.append(head, span("text", n.text));
    return li;
  }

  function renderNotes(notes) {
    el.notes.replaceChildren(...notes.slice(-MAX_NOTES).reverse().map(noteItem));
    el.notesEmpty.hidden = notes.length > 0;
  }

  function addNote(n) {
    el.notes.prepend(noteItem(n));
    while (el.notes.children.length > MAX_NOTES) el.notes.lastElementChild.remove();
    el.notesEmpty.hidden = true;
  }

  function showError(reason) {
    el.pageError.hidden = !reason;
    el.pageError.textContent = reason || "";
  }

  // --- start -----------------------------------------------------------------------------------

  const fromUrl = new URL(window.location.href).searchParams.get("driver");
  if (fromUrl && ID_RE.test(fromUrl)) {
    driverId = fromUrl;
    el.input.value = fromUrl;
  }
  render();
  connect();
})();
