"""Issue 16's second acceptance point, end to end: scripted OCPP 1.6J chargers (the PyPI `ocpp`
package, tests/support/ocpp_client.py), many in this one test process, against the real EV_OCPP,
EV_Central, EV_Driver and Kafka broker. What is asserted is what the network shows: Central's API
(states, sessions, balances, audit) and the driver's terminal lines.

The chargers live on an asyncio loop in a thread of their own (`ChargerLoop`), so they answer the
gateway's CALLs (remote start and stop, availability, trigger, reset: the kit's auto behaviour)
while this thread waits on Central's API and the programs' output. Every wait is for a condition.

Billing rule checked everywhere: a session is billed once, from the charger's meter (meterStop -
meterStart, Wh) at the CP's price; when Central closed the session first (a driver's stop, a fault,
a lost link) at the last MeterValues, the StopTransaction's meterStop is a late final reading and
only the difference is added (services/central.py `_late_final_reading`).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from evcharging.domain.money import cost
from tests.support.credentials import provision
from tests.support.ocpp_client import ENERGY, ScriptedCharger
from tests.support.processes import Network, Proc, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

T = TypeVar("T")


class ChargerLoop:
    """Scripted chargers on an event loop in a thread: `run(coro)` runs one step of a charger's
    script there and returns its result; between steps the chargers keep answering EV_OCPP."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="chargers", daemon=True)
        self.thread.start()
        self.made: list[ScriptedCharger] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.net.ocpp_port}"

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def charger(
        self, cp_id: str, password: str | None, *, meter_wh: int = 0, **options: Any
    ) -> ScriptedCharger:
        """A charger (auto behaviour) connected, not booted."""

        async def connect() -> ScriptedCharger:
            cp = ScriptedCharger(
                self.url, cp_id, password=password, auto=True, meter_wh=meter_wh, **options
            )
            return await cp.connect()

        charger = self.run(connect())
        self.made.append(charger)
        return charger

    def registered(self, cp_id: str, *, meter_wh: int = 0, **options: Any) -> ScriptedCharger:
        """A CP registered at Central (its Registry secret as Basic password), connected, booted
        Accepted, connector 1 Available: Activado at Central."""
        secret = provision(self.net.db_path, self.net.workdir, cp_id).secret  # type: ignore[arg-type]
        cp = self.charger(cp_id, secret, meter_wh=meter_wh, **options)
        self.boot(cp)
        self.net.wait_state(cp_id, "Activado", timeout=30)
        return cp

    def boot(self, cp: ScriptedCharger) -> None:
        async def boot() -> None:
            answer = await cp.boot()
            assert answer.status == "Accepted", (cp.cp_id, answer)
            await cp.status(1, "Available")

        self.run(boot())

    def reconnect(self, cp: ScriptedCharger) -> None:
        """Connected again (its meter and transactions kept) and booted."""
        self.run(cp.connect())
        self.boot(cp)

    def wait_call(self, cp: ScriptedCharger, action: str, timeout: float = 30.0) -> Any:
        return self.run(cp.wait_for_call(action, timeout=timeout), timeout=timeout + 5)

    def close(self) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(cp.close() for cp in self.made), return_exceptions=True)

        try:
            self.run(close_all())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


@pytest.fixture
def chargers(network: Network) -> Iterator[ChargerLoop]:
    loop = ChargerLoop(network)
    try:
        yield loop
    finally:
        loop.close()


# --- helpers ------------------------------------------------------------------------------


def price(net: Network, cp_id: str) -> Decimal:
    return Decimal(net.cp(cp_id)["price_eur_per_kwh"])


def ended(net: Network, cp_id: str, n: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The CP's ended sessions, once there are `n` (oldest first)."""
    rows = wait_until(
        lambda: (lambda e: len(e) >= n and e)(
            [s for s in net.sessions(cp_id=cp_id) if s.get("ended_at")]
        ),
        timeout,
        f"{n} ended session(s) at {cp_id}\n{net.tails()}",
    )
    return list(reversed(rows))


def billed(net: Network, cp_id: str, energy_kwh: Decimal, timeout: float = 30.0) -> dict[str, Any]:
    """The CP's one session, once Central bills exactly `energy_kwh` for it (a late final
    reading may correct it first)."""

    def seen() -> dict[str, Any] | None:
        rows = [s for s in net.sessions(cp_id=cp_id) if s.get("ended_at")]
        return rows[0] if rows and Decimal(rows[0]["energy_kwh"]) == energy_kwh else None

    row: dict[str, Any] = wait_until(seen, timeout, f"{cp_id} billed {energy_kwh} kWh")
    assert len(net.sessions(cp_id=cp_id)) == 1, net.sessions(cp_id=cp_id)
    assert Decimal(row["amount_eur"]) == cost(energy_kwh, price(net, cp_id)), row
    return row


def live_energy(net: Network, cp_id: str, energy_kwh: str) -> None:
    """Central shows the CP Suministrando with the charger's live energy."""

    def seen() -> dict[str, Any] | bool:
        view = net.cp(cp_id)
        return view["state"] == "Suministrando" and view["energy_kwh"] == energy_kwh and view

    wait_until(seen, 30, f"{cp_id} Suministrando with {energy_kwh} kWh\n{net.tails()}")


def advance_unreported(cp: ScriptedCharger, chargers: ChargerLoop, wh: int) -> None:
    """The charger's register moves on with no MeterValues sent: only its meterStop tells."""

    async def advance() -> None:
        cp.state[1].meter_wh += wh

    chargers.run(advance())


def assert_clean(gateway: Proc) -> None:
    """Nothing in the gateway's log is an error (every run of it, in one log file)."""
    log = gateway.output()
    assert " ERROR " not in log, log[-4000:]
    assert "Traceback" not in log, log[-4000:]


def driver_ready(net: Network, driver_id: str, cp_id: str) -> Proc:
    driver = net.driver(driver_id, "--cp", cp_id)
    driver.wait_for(f"AUTHORISED driver={driver_id} cp={cp_id}", timeout=40)
    return driver


# --- 1 and 3: the driver's app ------------------------------------------------------------


def remote_start_and_stop(net: Network, chargers: ChargerLoop, cp_id: str, driver_id: str) -> None:
    cp = chargers.registered(cp_id, meter_wh=10_000)
    before = Decimal(net.balance(driver_id))
    driver = driver_ready(net, driver_id, cp_id)
    start = chargers.wait_call(cp, "RemoteStartTransaction")
    assert start.payload["id_tag"] == driver_id
    chargers.run(cp.idle())  # Preparing, StartTransaction (meterStart 10000 Wh), Charging
    assert cp.state[1].transaction_id is not None
    for _ in range(3):
        chargers.run(cp.meter_tick(400))
    live_energy(net, cp_id, "1.200")
    driver.wait_for(f"PROGRESS driver={driver_id} cp={cp_id}", timeout=20)
    advance_unreported(cp, chargers, 234)  # meterStop 11434: Central's last reading is 11200

    driver.send("s")
    stop = chargers.wait_call(cp, "RemoteStopTransaction")
    assert stop.payload["transaction_id"] == start_tx(cp)
    chargers.run(cp.idle())  # StopTransaction (Remote, meterStop 11434), Available
    row = billed(net, cp_id, Decimal("1.434"))
    assert row["driver_id"] == driver_id
    driver.wait_for(f"TICKET driver={driver_id} cp={cp_id} kwh=1.434", timeout=20)
    assert Decimal(net.balance(driver_id)) == before - Decimal(row["amount_eur"])
    net.wait_state(cp_id, "Activado")


def start_tx(cp: ScriptedCharger) -> int:
    started = [r for a, r in cp.sent if a == "StartTransaction"]
    return int(started[-1].transaction_id)


def fault_mid_supply(net: Network, chargers: ChargerLoop, cp_id: str, driver_id: str) -> None:
    # Faulted, the charger cannot obey a remote stop: it ends the transaction itself
    cp = chargers.registered(cp_id, meter_wh=50_000, answers={"RemoteStopTransaction": "Rejected"})
    before = Decimal(net.balance(driver_id))
    driver = driver_ready(net, driver_id, cp_id)
    chargers.wait_call(cp, "RemoteStartTransaction")
    chargers.run(cp.idle())
    tx = start_tx(cp)
    chargers.run(cp.meter_tick(300))
    live_energy(net, cp_id, "0.300")

    chargers.run(cp.status(1, "Faulted", error_code="GroundFailure"))
    view = net.wait_state(cp_id, "Averiado")
    assert "GroundFailure" in (view["fault_reason"] or ""), view
    driver.wait_for("ERROR EN CP", timeout=20)
    driver.wait_for(f"TICKET driver={driver_id} cp={cp_id} kwh=0.300", timeout=20)
    first = ended(net, cp_id)[0]
    assert first["end_reason"] == "cp_fault", first

    advance_unreported(cp, chargers, 50)
    chargers.run(cp.stop(tx, reason="EmergencyStop"))  # meterStop 50350: a late final reading
    row = billed(net, cp_id, Decimal("0.350"))
    assert row["end_reason"] == "cp_fault"
    assert Decimal(net.balance(driver_id)) == before - Decimal(row["amount_eur"])
    chargers.run(cp.status(1, "Available"))
    net.wait_state(cp_id, "Activado")


def test_a_driver_starts_and_stops_a_charger_from_the_app_and_a_fault_ends_a_supply(
    network: Network, chargers: ChargerLoop
) -> None:
    net = network
    net.central()
    gateway = net.ocpp_gateway()
    remote_start_and_stop(net, chargers, "OCPPDR1", "D001")
    fault_mid_supply(net, chargers, "OCPPDR2", "D002")
    assert_clean(gateway)


# --- 2: the admin's stop and resume, one and all; report status and reset -------------------


def test_admin_stop_resume_stop_all_report_status_reset_and_revoke_reach_the_chargers(
    network: Network, chargers: ChargerLoop
) -> None:
    net = network
    net.central()
    gateway = net.ocpp_gateway()
    a, b, c = (chargers.registered(cp_id) for cp_id in ("OCPPAD1", "OCPPAD2", "OCPPAD3"))

    # one CP stopped while it supplies: RemoteStop first, then Inoperative (Scheduled), Parado
    driver_ready(net, "D003", "OCPPAD1")
    chargers.wait_call(a, "RemoteStartTransaction")
    chargers.run(a.idle())
    chargers.run(a.meter_tick(500))
    live_energy(net, "OCPPAD1", "0.500")
    assert net.admin("/api/cps/OCPPAD1/stop").status_code == 200
    inoperative = chargers.wait_call(a, "ChangeAvailability")
    assert inoperative.payload["type"] == "Inoperative"
    chargers.run(a.idle())
    actions = [r.action for r in a.calls]
    assert actions.index("RemoteStopTransaction") < actions.index("ChangeAvailability"), actions
    # Scheduled if its StopTransaction had not left yet (Unavailable right after it), else
    # Accepted (Available after the stop, then Unavailable)
    sent = [action for action, _ in a.sent]
    assert sent[-1] == "StatusNotification", sent
    assert "StopTransaction" in sent[-3:], sent
    assert a.state[1].status == "Unavailable"
    assert a.state[1].transaction_id is None
    view = net.wait_state("OCPPAD1", "Parado")
    assert view["caption"] == "Out of Order", view
    row = billed(net, "OCPPAD1", Decimal("0.500"))
    assert row["end_reason"] == "stopped_by_central", row

    assert net.admin("/api/cps/OCPPAD1/resume").status_code == 200
    operative = chargers.wait_call(a, "ChangeAvailability")
    assert operative.payload["type"] == "Operative"
    net.wait_state("OCPPAD1", "Activado")

    # stop-all and resume-all reach every OCPP charger
    assert net.admin("/api/cps/stop-all").status_code == 200
    for cp in (a, b, c):
        assert chargers.wait_call(cp, "ChangeAvailability").payload["type"] == "Inoperative"
        net.wait_state(cp.cp_id, "Parado")
    assert net.admin("/api/cps/resume-all").status_code == 200
    for cp in (a, b, c):
        assert chargers.wait_call(cp, "ChangeAvailability").payload["type"] == "Operative"
        net.wait_state(cp.cp_id, "Activado")

    # the admin's two asks: TriggerMessage StatusNotification, and Reset (soft, then hard)
    assert net.admin("/api/cps/OCPPAD2/report-status").status_code == 200
    trigger = chargers.wait_call(b, "TriggerMessage")
    assert trigger.payload["requested_message"] == "StatusNotification"
    chargers.run(b.idle())
    assert b.sent[-1][0] == "StatusNotification"
    assert net.admin("/api/cps/OCPPAD3/reset").status_code == 200
    assert chargers.wait_call(c, "Reset").payload["type"] == "Soft"
    hard = httpx.post(
        f"{net.api}/api/cps/OCPPAD3/reset", json={"hard": True}, headers=net.auth, timeout=10
    )
    assert hard.status_code == 200, hard.text
    assert chargers.wait_call(c, "Reset").payload["type"] == "Hard"
    chargers.run(c.idle())  # each Reset: BootNotification again and its status
    assert [a for a, _ in c.sent].count("BootNotification") == 3
    net.wait_state("OCPPAD3", "Activado")
    assert len(net.sessions(cp_id="OCPPAD1")) == 1

    # "Restaurar claves" on a charger: Parado and Inoperative until the gateway logs the CP in
    # again (5 s later, for a new key); then a driver's request reaches it sealed with that key
    assert net.admin("/api/cps/OCPPAD2/revoke-keys").status_code == 200
    assert chargers.wait_call(b, "ChangeAvailability").payload["type"] == "Inoperative"
    net.wait_state("OCPPAD2", "Parado")
    assert chargers.wait_call(b, "ChangeAvailability").payload["type"] == "Operative"
    net.wait_state("OCPPAD2", "Activado")
    driver_ready(net, "D004", "OCPPAD2")
    chargers.wait_call(b, "RemoteStartTransaction")
    chargers.run(b.idle())
    chargers.run(b.meter_tick(300))
    live_energy(net, "OCPPAD2", "0.300")
    assert [r["action"] for r in net.audit(cp="OCPPAD2", action="key.revoked")], "audited"
    assert_clean(gateway)


# --- 4 and 6: connections -------------------------------------------------------------------


def test_a_dropped_charger_is_desconectado_and_back_after_it_reboots_and_strangers_are_refused(
    network: Network, chargers: ChargerLoop
) -> None:
    net = network
    net.central()
    gateway = net.ocpp_gateway()
    cp = chargers.registered("OCPPCN1")

    chargers.run(cp.drop())  # no close frame: the link is just gone
    net.wait_state("OCPPCN1", "Desconectado", timeout=10)
    chargers.reconnect(cp)
    net.wait_state("OCPPCN1", "Activado", timeout=20)

    # a CP id never registered: the handshake passes (Basic), Central refuses it at Boot
    stranger = chargers.charger("OCPPNONE", "any-secret")
    assert chargers.run(stranger.boot()).status == "Rejected"
    assert "OCPPNONE" not in {view["id"] for view in net.get("/api/cps")}
    assert httpx.get(f"{net.api}/api/cps/OCPPNONE", headers=net.auth).status_code == 404
    failed = wait_until(lambda: net.audit(cp="OCPPNONE", action="auth.failed"), 20, "audit")
    assert failed[0]["outcome"] == "denied", failed

    # a registered CP with the wrong password
    provision(net.db_path, net.workdir, "OCPPCN2")  # type: ignore[arg-type]
    wrong = chargers.charger("OCPPCN2", "not-its-secret")
    assert chargers.run(wrong.boot()).status == "Rejected"
    net.wait_state("OCPPCN2", "Desconectado")
    assert wait_until(lambda: net.audit(cp="OCPPCN2", action="auth.failed"), 20, "audit")

    # no credentials at all: the WebSocket handshake is refused
    with pytest.raises(InvalidStatus) as refused:
        chargers.charger("OCPPCN3", None)
    assert refused.value.response.status_code == 401
    assert net.cp("OCPPCN1")["state"] == "Activado"  # the strangers changed nothing of it
    assert_clean(gateway)


# --- 5: idempotency -------------------------------------------------------------------------


def ago(minutes: int) -> str:
    moment = datetime.now(UTC) - timedelta(minutes=minutes)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def start_frame(id_tag: str, meter_start: int, minutes_ago: int) -> dict[str, Any]:
    return {
        "connectorId": 1,
        "idTag": id_tag,
        "meterStart": meter_start,
        "timestamp": ago(minutes_ago),
    }


def stop_frame(tx: int, meter_stop: int, minutes_ago: int) -> dict[str, Any]:
    return {
        "transactionId": tx,
        "meterStop": meter_stop,
        "timestamp": ago(minutes_ago),
        "reason": "Local",
    }


def meter_frame(tx: int, wh: int, minutes_ago: int) -> dict[str, Any]:
    sample = {"value": str(wh), "measurand": ENERGY, "unit": "Wh"}
    return {
        "connectorId": 1,
        "transactionId": tx,
        "meterValue": [{"timestamp": ago(minutes_ago), "sampledValue": [sample]}],
    }


def test_repeated_message_ids_replayed_stops_and_an_offline_queue_are_billed_once(
    network: Network, chargers: ChargerLoop
) -> None:
    net = network
    net.central()
    gateway = net.ocpp_gateway()
    cp = chargers.registered("OCPPID1")
    balance = Decimal(net.balance("D004"))

    # the same StartTransaction frame twice (one message id): the same answer, one session
    start = start_frame("D004", 5_000, 0)
    first = chargers.run(cp.raw("dup-start-1", "StartTransaction", start))
    assert chargers.run(cp.raw("dup-start-1", "StartTransaction", start)) == first
    assert first[0] == 3, first
    assert first[2]["idTagInfo"]["status"] == "Accepted", first
    tx = first[2]["transactionId"]
    assert chargers.run(cp.raw("meter-1", "MeterValues", meter_frame(tx, 5_300, 0)))[0] == 3
    live_energy(net, "OCPPID1", "0.300")

    # the same StopTransaction frame twice: the same answer, billed once
    stop = stop_frame(tx, 5_600, 0)
    stopped = chargers.run(cp.raw("dup-stop-1", "StopTransaction", stop))
    assert chargers.run(cp.raw("dup-stop-1", "StopTransaction", stop)) == stopped
    assert stopped[0] == 3, stopped
    row = billed(net, "OCPPID1", Decimal("0.600"))
    balance -= Decimal(row["amount_eur"])
    assert Decimal(net.balance("D004")) == balance

    # the stop replayed after the session ended (a new message id): answered the same, not
    # billed again (the sessions and balance below are checked after later supplies)
    replayed = chargers.run(cp.raw("replay-stop-1", "StopTransaction", stop))
    assert replayed == [3, "replay-stop-1", stopped[2]], (replayed, stopped)

    # offline: a reconnect, then the queued transactions in order, with no Authorize first
    chargers.run(cp.drop())
    net.wait_state("OCPPID1", "Desconectado", timeout=10)
    chargers.reconnect(cp)
    queued = chargers.run(cp.raw("q-start-1", "StartTransaction", start_frame("D004", 8_000, 30)))
    assert queued[2]["idTagInfo"]["status"] == "Accepted", queued
    tx1 = queued[2]["transactionId"]
    assert chargers.run(cp.raw("q-meter-1", "MeterValues", meter_frame(tx1, 8_200, 25)))[0] == 3
    assert chargers.run(cp.raw("q-stop-1", "StopTransaction", stop_frame(tx1, 8_400, 20)))[0] == 3
    queued = chargers.run(cp.raw("q-start-2", "StartTransaction", start_frame("D004", 8_400, 15)))
    assert queued[2]["idTagInfo"]["status"] == "Accepted", queued
    tx2 = queued[2]["transactionId"]
    assert tx2 > tx1 > tx
    assert chargers.run(cp.raw("q-stop-2", "StopTransaction", stop_frame(tx2, 8_500, 10)))[0] == 3

    rows = ended(net, "OCPPID1", 3)
    assert [Decimal(r["energy_kwh"]) for r in rows] == [
        Decimal("0.600"),
        Decimal("0.400"),
        Decimal("0.100"),
    ]
    assert len(net.sessions(cp_id="OCPPID1")) == 3
    assert {r["driver_id"] for r in rows} == {"D004"}
    for r in rows:
        assert Decimal(r["amount_eur"]) == cost(Decimal(r["energy_kwh"]), price(net, "OCPPID1"))
    balance -= sum((Decimal(r["amount_eur"]) for r in rows[1:]), Decimal(0))
    wait_until(lambda: Decimal(net.balance("D004")) == balance, 20, "D004's balance")
    assert_clean(gateway)


# --- 5 and 7: the gateway stopped (each signal) mid-transaction, started again --------------


@pytest.mark.parametrize(
    "how", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name
)
def test_the_gateway_stopped_mid_transaction_and_started_again_bills_the_stop_once(
    network: Network, chargers: ChargerLoop, how: signal.Signals
) -> None:
    net = network
    net.central()
    gateway = net.ocpp_gateway()
    cp = chargers.registered("OCPPGW1", meter_wh=70_000)
    before = Decimal(net.balance("D005"))
    assert chargers.run(cp.authorize("D005")).id_tag_info["status"] == "Accepted"
    tx = chargers.run(cp.start(1, "D005")).transaction_id
    chargers.run(cp.status(1, "Charging"))
    chargers.run(cp.meter_tick(400))
    live_energy(net, "OCPPGW1", "0.400")

    gateway.stop_by(how)
    if how is not signal.SIGKILL:
        assert gateway.popen.returncode == 0, gateway.output()[-3000:]
    chargers.run(cp.wait_closed())
    net.wait_state("OCPPGW1", "Desconectado", timeout=10)
    first = ended(net, "OCPPGW1")[0]  # Central closed it at the last reading it had
    assert Decimal(first["energy_kwh"]) == Decimal("0.400"), first

    advance_unreported(cp, chargers, 150)  # it charged on while the gateway was away
    gateway = net.ocpp_gateway(port=net.ocpp_port)  # the same state dir (.run/ocpp)
    chargers.reconnect(cp)
    net.wait_state("OCPPGW1", "Activado", timeout=20)
    stopped = chargers.run(cp.stop(tx, reason="Local"))  # meterStop 70550
    assert stopped.id_tag_info == {"status": "Accepted"}
    row = billed(net, "OCPPGW1", Decimal("0.550"))
    wait_until(
        lambda: Decimal(net.balance("D005")) == before - Decimal(row["amount_eur"]),
        20,
        "D005 debited once",
    )
    assert_clean(gateway)
