"""The driver dashboard's web adapter over an in-memory DriverService (FastAPI TestClient).

Events from Central are fed to the service by the test (`net.deliver`), actions go out to a fake
publisher; the pages are TestClient WebSockets.  Nothing here waits for wall-clock time: every
receive has a deadline and a test fails if a frame it waits for never comes.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import uuid4

import anyio
import pytest
from starlette.exceptions import StarletteDeprecationWarning
from starlette.websockets import WebSocketDisconnect

from evcharging.adapters.broker_state import KafkaState
from evcharging.adapters.web.driver_hub import DriverHub
from evcharging.adapters.web.driver_messages import MAX_MESSAGE_CHARS
from evcharging.adapters.web.driver_runs import ServiceRuns
from evcharging.adapters.web.driver_web import create_app
from evcharging.apps.driver import parse_args
from evcharging.contracts.events import (
    AuthorizationRequest,
    AuthorizationResponse,
    ChargingProgress,
    ChargingStarted,
    ChargingStopped,
    CpErrorFixed,
    CpErrorSimulated,
    CpStatus,
    DriverNotice,
    Event,
)
from evcharging.services.driver import DriverPhase, DriverService
from evcharging.services.ports import DriverRefusal
from tests.support.builders import a_ticket
from tests.support.fakes import LocalFeeds
from tests.support.waiting import eventually_sync

with warnings.catch_warnings():
    # Starlette >= 1.x prefers `httpx2` for its TestClient and warns (an error here) with httpx.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient, WebSocketTestSession

D1, D2 = "D001", "D002"
DEADLINE = 5.0

Frame = dict[str, Any]


class FakePublisher:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, event: Event) -> None:
        self.events.append(event)

    def of(self, cls: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


@dataclass
class Page:
    """One browser page's WebSocket: frames received with a deadline, and what was skipped."""

    ws: WebSocketTestSession
    seen: list[Frame] = field(default_factory=list)

    def send(self, message: Any) -> None:
        self.ws.send_text(message if isinstance(message, str) else json.dumps(message))

    def next(self, timeout: float = DEADLINE) -> Frame:
        async def receive() -> Any:
            with anyio.fail_after(timeout):
                # the session's own stream: its receive_json() has no deadline
                return await self.ws._send_rx.receive()

        message = self.ws.portal.call(receive)
        if message["type"] == "websocket.close":
            raise WebSocketDisconnect(message.get("code", 1000))
        frame: Frame = json.loads(message["text"])
        self.seen.append(frame)
        return frame

    def until(self, frame_type: str, **expected: Any) -> Frame:
        """The next frame of that type (and those fields); frames before it are in `seen`."""
        for _ in range(200):
            frame = self.next()
            if frame["type"] == frame_type and all(frame.get(k) == v for k, v in expected.items()):
                return frame
        raise AssertionError(f"no {frame_type} {expected} in 200 frames")

    def select(self, driver_id: str) -> Frame:
        self.send({"type": "select_driver", "driver_id": driver_id})
        return self.until("state", driver_id=driver_id)


@dataclass
class Net:
    """A driver process without Kafka: the service, its hub, and a way to act as Central."""

    client: TestClient
    service: DriverService
    publisher: FakePublisher
    hub: DriverHub

    def deliver(self, event: Event) -> None:
        self.client.portal.call(self.service.handle, event)

    def page(self) -> Iterator[Page]:
        with self.client.websocket_connect("/ws") as ws:
            page = Page(ws)
            page.until("board")
            yield page

    def request(self, driver_id: str, cp_id: str) -> AuthorizationRequest:
        self.client.portal.call(self.service.request, driver_id, cp_id)
        return self.last_request(driver_id)

    def last_request(self, driver_id: str) -> AuthorizationRequest:
        requests = [r for r in self.publisher.of(AuthorizationRequest) if r.driver_id == driver_id]
        assert requests, f"no request of {driver_id}"
        return requests[-1]

    def authorise(self, req: AuthorizationRequest) -> AuthorizationResponse:
        answer = AuthorizationResponse(
            request_id=req.request_id,
            driver_id=req.driver_id,
            cp_id=req.cp_id,
            authorised=True,
            session_id=uuid4(),
            price_eur_per_kwh=Decimal("0.35"),
        )
        self.deliver(answer)
        return answer

    def deny(self, req: AuthorizationRequest, reason: str = "CP busy") -> None:
        self.deliver(
            AuthorizationResponse(
                request_id=req.request_id,
                driver_id=req.driver_id,
                cp_id=req.cp_id,
                authorised=False,
                reason=reason,
            )
        )

    def supply(self, answer: AuthorizationResponse, energy: str = "1.500") -> None:
        assert answer.session_id is not None
        self.deliver(
            ChargingStarted(
                driver_id=answer.driver_id, cp_id=answer.cp_id, session_id=answer.session_id
            )
        )
        self.progress(answer, energy)

    def progress(self, answer: AuthorizationResponse, energy: str) -> None:
        assert answer.session_id is not None
        self.deliver(
            ChargingProgress(
                driver_id=answer.driver_id,
                cp_id=answer.cp_id,
                session_id=answer.session_id,
                kw=Decimal("22"),
                energy_kwh=Decimal(energy),
                amount_eur=Decimal(energy) * Decimal("0.35"),
            )
        )

    def ticket(self, answer: AuthorizationResponse, reason: str = "stopped_by_driver") -> None:
        assert answer.session_id is not None
        self.deliver(a_ticket(answer.driver_id, answer.cp_id, answer.session_id, reason=reason))


def a_status(
    cp_id: str, state: str = "Activado", available: bool = True, stop_reason: str | None = None
) -> CpStatus:
    return CpStatus(
        cp_id=cp_id,
        location=f"Alicante {cp_id}",
        price_eur_per_kwh=Decimal("0.35"),
        state=state,  # type: ignore[arg-type]
        available=available,
        stop_reason=stop_reason,
    )


def build(make_feeds: Callable[[DriverService], LocalFeeds] = LocalFeeds) -> Iterator[Net]:
    publisher = FakePublisher()
    service = DriverService(publisher, answer_timeout=60.0)
    feeds = make_feeds(service)
    runs = ServiceRuns(service, 0.01, feeds.ready)
    hub = DriverHub(service, feeds, runs, default_driver_id=D1)
    with TestClient(create_app(hub)) as client:
        net = Net(client, service, publisher, hub)
        for cp_id in ("ALC01", "VLC01"):
            net.deliver(a_status(cp_id))
        try:
            yield net
        finally:
            client.portal.call(hub.close)
            client.portal.call(service.close)


@pytest.fixture
def net() -> Iterator[Net]:
    yield from build()


@pytest.fixture
def page(net: Net) -> Iterator[Page]:
    yield from net.page()


def notification_texts(frame: Frame) -> list[str]:
    return [n["text"] for n in frame["notifications"]]


# --- the page and its first frames ---------------------------------------------------------


def test_index_and_assets_are_served_with_a_strict_policy(net: Net) -> None:
    index = net.client.get("/")
    assert index.status_code == 200
    for test_id in ("driver-id-input", "cp-list", "ws-status", "services-run", "notifications"):
        assert f'data-testid="{test_id}"' in index.text
    assert "http" not in index.text.replace("http-equiv", "")  # no CDN: every asset is ours
    assert "default-src 'self'" in index.headers["content-security-policy"]
    for asset in ("driver.js", "driver.css"):
        assert net.client.get(f"/static/{asset}").status_code == 200


def test_a_new_page_gets_welcome_kafka_then_the_board(net: Net) -> None:
    with net.client.websocket_connect("/ws") as ws:
        page = Page(ws)
        welcome = page.next()
        kafka = page.next()
        board = page.next()

    assert welcome["type"] == "welcome"
    assert welcome["default_driver_id"] == D1
    assert (kafka["type"], kafka["up"]) == ("kafka", True)
    assert board["type"] == "board"
    assert [cp["cp_id"] for cp in board["cps"]] == ["ALC01", "VLC01"]
    assert board["cps"][0] == {
        "cp_id": "ALC01",
        "location": "Alicante ALC01",
        "price_eur_per_kwh": "0.35",
        "state": "Activado",
        "available": True,
        "stop_reason": None,
        "tag": "Activado · available",
        "tone": "ok",
    }


def test_select_answers_the_full_state_first_and_a_reload_sees_the_same(net: Net) -> None:
    answer = net.authorise(net.request(D1, "ALC01"))
    net.supply(answer, "1.500")

    pages = []
    for _ in range(2):  # the second one is the same page reloaded
        for page in net.page():
            pages.append(page.select(D1))

    first, reloaded = pages
    state = first["state"]
    assert state["phase"] == DriverPhase.SUPPLYING.value
    assert (state["status"], state["detail"]) == ("Supplying", "Charging at ALC01")
    assert state["figures"] == {"kw": "22.00", "energy_kwh": "1.500", "amount_eur": "0.53"}
    assert state["session_id"] == str(answer.session_id)
    assert (state["can_stop"], state["can_request"]) == (True, False)
    assert notification_texts(first) == [
        "Request sent for ALC01",
        "Authorised at ALC01 at 0.35 €/kWh: plug in your vehicle",
        "Supplying at ALC01",
    ]
    assert reloaded["state"] == state
    assert reloaded["notifications"] == first["notifications"]


def test_a_whole_supply_is_pushed_live_and_the_stop_gets_the_ticket(net: Net, page: Page) -> None:
    page.select(D1)

    page.send({"type": "request", "cp_id": "ALC01"})
    assert page.until("accepted")["action"] == "request"
    sent = page.until("request_sent")
    assert sent["state"]["status"] == "Waiting for CENTRAL"
    assert sent["notification"]["text"] == "Request sent for ALC01"

    answer = net.authorise(net.last_request(D1))
    assert page.until("authorised")["state"]["status"] == "Authorised"
    net.supply(answer, "0.250")
    page.until("supplying")
    live = page.until("progress")
    assert live["figures"]["energy_kwh"] == "0.250"
    assert live["notification"] is None  # live figures are not notifications
    net.progress(answer, "0.500")
    assert page.until("progress")["state"]["figures"]["energy_kwh"] == "0.500"

    page.send({"type": "stop"})
    page.until("stop_sent")
    [stop] = net.publisher.of(ChargingStopped)
    assert (stop.driver_id, stop.cp_id, stop.session_id) == (D1, "ALC01", answer.session_id)

    net.ticket(answer)
    done = page.until("ticket")
    assert done["ticket"]["energy_kwh"] == "2.000"
    assert done["ticket"]["amount_eur"] == "0.70"
    assert done["ticket"]["end_reason"] == "stopped_by_driver"
    assert done["state"]["status"] == "Charging completed"
    assert done["state"]["balance_eur"] == "149.30"
    assert done["state"]["figures"] is None
    assert done["state"]["can_request"] is True
    assert "charging completed" in done["notification"]["text"].lower()


def test_cp_error_shows_error_en_cp_with_its_message_then_cp_fixed(net: Net, page: Page) -> None:
    page.select(D1)
    answer = net.authorise(net.request(D1, "ALC01"))
    net.supply(answer)

    net.deliver(
        CpErrorSimulated(cp_id="ALC01", driver_id=D1, message='Error "fault" simulated at ALC01')
    )
    error = page.until("cp_error")
    assert error["cp_id"] == "ALC01"
    assert error["message"] == 'Error "fault" simulated at ALC01'
    assert error["level"] == "error"
    assert error["state"]["status"] == "ERROR EN CP"
    assert error["notification"]["text"] == 'ERROR EN CP ALC01: Error "fault" simulated at ALC01'

    net.ticket(answer, "cp_fault")
    assert page.until("ticket")["state"]["status"] == "ERROR EN CP"  # until the CP is fixed

    net.deliver(CpErrorFixed(cp_id="ALC01", driver_id=D1, message="Error fixed at ALC01"))
    fixed = page.until("cp_fixed")
    assert fixed["message"] == "Error fixed at ALC01"
    assert fixed["state"]["status"] == "Charging interrupted"
    assert fixed["state"]["cp_error"] is None


def test_denials_and_board_changes_reach_the_page(net: Net, page: Page) -> None:
    page.select(D1)
    page.send({"type": "request", "cp_id": "VLC01"})
    page.until("request_sent")
    net.deny(net.last_request(D1), "CP busy")
    denied = page.until("denied")
    assert (denied["state"]["status"], denied["state"]["detail"]) == ("Denied", "VLC01: CP busy")
    assert denied["notification"]["text"] == "Denied at VLC01: CP busy"

    net.deliver(a_status("VLC01", "Averiado", available=False))
    status = page.until("cp_status")
    assert status["cp"]["state"] == "Averiado"
    assert status["cp"]["available"] is False


def test_a_cp_stopped_by_a_weather_alert_says_so_on_the_board_and_to_its_driver(
    net: Net, page: Page
) -> None:
    page.select(D1)
    page.send({"type": "request", "cp_id": "VLC01"})
    page.until("request_sent")
    net.authorise(net.last_request(D1))
    page.until("authorised")
    net.deliver(a_status("VLC01", "Parado", False, "weather alert"))
    status = page.until("cp_status")
    assert (status["cp"]["stop_reason"], status["cp"]["tag"]) == (
        "weather alert",
        "Parado (weather alert) · Out of Order",
    )
    change = page.until("cp_state")
    assert change["notification"]["text"] == "CP VLC01 is now Parado (weather alert)"


# --- isolation -----------------------------------------------------------------------------


def test_two_drivers_on_one_process_never_see_each_other(net: Net) -> None:
    for first in net.page():
        for second in net.page():
            first.select(D1)
            theirs = second.select(D2)
            mark = len(second.seen) - 1  # from D002's state on
            answer = net.authorise(net.request(D1, "ALC01"))
            net.supply(answer)
            net.ticket(answer)
            first.until("ticket")

            net.deliver(DriverNotice(driver_id=D2, message="only for D002"))
            notice = second.until("notice")
            first.send({"type": "stop"})  # D001's page is still served (and refused: no supply)
            first.until("refused")

            assert notice["message"] == "only for D002"
            assert [f["type"] for f in second.seen[mark:]] == ["state", "notice"]
            assert "D001" not in json.dumps(second.seen[mark:])
            assert "only for D002" not in json.dumps(first.seen)
            assert theirs["state"]["phase"] == "idle"
            assert theirs["notifications"] == []


def test_switching_driver_stops_the_old_drivers_pushes(net: Net, page: Page) -> None:
    page.select(D1)
    page.select(D2)
    mark = len(page.seen)
    answer = net.authorise(net.request(D1, "ALC01"))
    net.supply(answer)
    net.deliver(DriverNotice(driver_id=D2, message="for D002"))

    page.until("notice")
    assert [f["driver_id"] for f in page.seen[mark:]] == [D2]


# --- bad input -----------------------------------------------------------------------------


BAD = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ({"type": "fly"}, "unknown message type 'fly'"),
    ({"no": "type"}, "unknown message type None"),
    ({"type": "select_driver", "driver_id": "D 001<script>"}, "invalid select_driver: driver_id"),
    ({"type": "select_driver"}, "invalid select_driver: driver_id: Field required"),
    ({"type": "select_driver", "driver_id": D1, "extra": 1}, "extra: Extra inputs"),
    ({"type": "request", "cp_id": "ALC01"}, "select a driver first"),
]

BAD_WHEN_FOLLOWING = [
    ({"type": "request", "cp_id": "../../etc"}, "invalid request: cp_id"),
    ({"type": "request"}, "invalid request: cp_id: Field required"),
    ({"type": "request", "cp_id": "ALC01", "driver_id": D2}, "this page follows D001, not D002"),
    ({"type": "stop", "driver_id": D2}, "this page follows D001, not D002"),
    ({"type": "run_services", "text": "ALC01\nnot a cp id!\n"}, "services file: line 2"),
    ({"type": "run_services", "text": "# only a comment\n"}, "services file: no CP id in it"),
    ({"type": "run_services"}, "run_services needs either cp_ids or text"),
    ({"type": "run_services", "cp_ids": []}, "invalid run_services: cp_ids"),
    ({"type": "run_services", "cp_ids": ["ALC01", 7]}, "invalid run_services: cp_ids.1"),
    ("x" * (MAX_MESSAGE_CHARS + 1), "message too long"),
]


@pytest.mark.parametrize(("message", "reason"), BAD + BAD_WHEN_FOLLOWING)
def test_bad_input_is_answered_logged_and_changes_nothing(
    net: Net, page: Page, caplog: pytest.LogCaptureFixture, message: Any, reason: str
) -> None:
    if (message, reason) in BAD_WHEN_FOLLOWING:
        page.select(D1)

    page.send(message)
    error = page.until("error")

    assert reason in error["reason"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(reason in r.getMessage() for r in warnings)
    assert net.publisher.events == []
    assert D2 not in net.service.driver_ids
    assert net.service.driver_ids in ([], [D1])
    if D1 in net.service.driver_ids:
        assert net.service.state(D1).phase is DriverPhase.IDLE
        assert list(net.service.state(D1).notifications) == []
    assert page.select(D1)["state"]["status"] == "Idle"  # the socket still works


def test_a_binary_frame_is_refused(net: Net, page: Page) -> None:
    page.ws.send_bytes(b'{"type":"stop"}')
    assert "binary frames are not accepted" in page.until("error")["reason"]


def test_a_page_of_another_site_is_refused(net: Net, caplog: pytest.LogCaptureFixture) -> None:
    with (
        pytest.raises(WebSocketDisconnect),
        net.client.websocket_connect("/ws", headers={"origin": "http://evil.example"}),
    ):
        pass
    assert any("origin http://evil.example" in r.getMessage() for r in caplog.records)

    with net.client.websocket_connect("/ws", headers={"origin": "http://testserver"}) as ws:
        assert Page(ws).next()["type"] == "welcome"


def test_following_a_driver_the_feeds_refuse_is_an_error() -> None:
    class Full(LocalFeeds):
        def follow(self, driver_id: str) -> DriverRefusal | None:
            if driver_id != D1:
                return DriverRefusal("this Driver process serves at most 1 driver ids")
            return super().follow(driver_id)

    for net in build(Full):
        for page in net.page():
            page.select(D1)
            page.send({"type": "select_driver", "driver_id": D2})
            assert "at most 1 driver ids" in page.until("error")["reason"]
            page.send({"type": "stop"})  # still following D001
            assert page.until("refused")["driver_id"] == D1


# --- services files ------------------------------------------------------------------------


def test_a_services_file_runs_server_side_and_goes_on_after_the_page_closes(net: Net) -> None:
    for page in net.page():
        page.select(D1)
        page.send({"type": "run_services", "text": "ALC01\n# a comment\nVLC01\n"})
        assert page.until("accepted")["action"] == "run_services"
        started = page.until("notice")
        assert started["message"] == "Services file started: ALC01, VLC01 (0.01 s between services)"
        assert started["state"]["services"] == {"running": True, "cp_ids": ["ALC01", "VLC01"]}
        page.send({"type": "run_services", "cp_ids": ["ALC01"]})
        assert "already running" in page.until("error")["reason"]

    # the page is closed; Central answers both requests
    eventually_sync(lambda: net.publisher.of(AuthorizationRequest), DEADLINE, what="request 1")
    net.deny(net.last_request(D1), "CP busy")
    eventually_sync(
        lambda: len(net.publisher.of(AuthorizationRequest)) == 2, DEADLINE, what="request 2"
    )
    net.deny(net.last_request(D1), "CP busy")
    eventually_sync(lambda: not net.hub.runs.running(D1), DEADLINE, what="the run to end")

    for page in net.page():
        state = page.select(D1)

    assert [r.cp_id for r in net.publisher.of(AuthorizationRequest)] == ["ALC01", "VLC01"]
    assert state["state"]["services"] == {"running": False, "cp_ids": ["ALC01", "VLC01"]}
    assert notification_texts(state) == [
        "Services file started: ALC01, VLC01 (0.01 s between services)",
        "Request sent for ALC01",
        "Denied at ALC01: CP busy",
        "Next service at VLC01 in 0.01s (2/2)",
        "Request sent for VLC01",
        "Denied at VLC01: CP busy",
        "Services file done: 2 service(s)",
    ]


# --- the program's flags -------------------------------------------------------------------


def test_web_flags_and_their_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = parse_args(["127.0.0.1:9092", D1])
    assert plain.web_port is None

    s = parse_args(["127.0.0.1:9092", D1, "--web-port", "8081", "--web-host", "0.0.0.0"])
    assert (s.web_port, s.web_host) == (8081, "0.0.0.0")

    monkeypatch.setenv("EV_DRIVER_WEB_PORT", "8082")
    monkeypatch.setenv("EV_DRIVER_WEB_HOST", "::1")
    s = parse_args(["127.0.0.1:9092", D1])
    assert (s.web_port, s.web_host) == (8082, "::1")


@pytest.mark.parametrize("port", ["http", "-1", "70000"])
def test_a_bad_web_port_is_refused_naming_the_flag(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["127.0.0.1:9092", D1, "--web-port", port])
    assert "--web-port" in capsys.readouterr().err


def test_every_page_is_told_when_kafka_goes_and_comes_back(net: Net) -> None:
    with net.client.websocket_connect("/ws") as ws:
        page = Page(ws)
        page.until("board")
        gone = KafkaState(up=False, problem="Kafka unreachable at k:9092", since=1.0)
        net.client.portal.call(net.hub.set_kafka, gone)  # as the watch does, in the loop
        down = page.until("kafka")
        net.client.portal.call(net.hub.set_kafka, KafkaState(up=True, since=16.0))
        up = page.until("kafka")

    assert (down["up"], down["problem"], down["since"]) == (
        False,
        "Kafka unreachable at k:9092",
        1.0,
    )
    assert up["up"] is True
