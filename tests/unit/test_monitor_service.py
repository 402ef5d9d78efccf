"""The Monitor's rules: heartbeat status, FAULT/RECOVER once, what the Engine must be told."""

from __future__ import annotations

import base64
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evcharging.adapters.sockets.monitor_links import Timing
from evcharging.apps.cp_monitor import MonitorApp, MonitorSettings, parse_args
from evcharging.services.cp_auth import b64
from evcharging.services.cp_keys import CpKey, new_key
from evcharging.services.monitor import (
    Backoff,
    CentralLink,
    Fault,
    MonitorService,
    Recover,
    Report,
)
from tests.support.ports import free_port
from tests.support.waiting import eventually


class Calls:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def a_monitor() -> tuple[MonitorService, Calls]:
    calls = Calls()
    return MonitorService("CP01", on_change=calls), calls


def tell(svc: MonitorService) -> Report | None:
    """What the Central loop does each cycle: send what is pending (Central answers OK)."""
    report = svc.pending_report()
    if report is not None:
        svc.reported(report)
    return report


def test_heartbeat_says_ok_only_after_the_engine_answered_ok() -> None:
    svc, _ = a_monitor()
    assert svc.heartbeat_status == "KO"
    assert not svc.has_verdict
    svc.engine_ok()
    assert svc.heartbeat_status == "OK"
    svc.engine_ko("fan")
    assert svc.heartbeat_status == "KO"
    svc.engine_unreachable("refused")
    assert svc.heartbeat_status == "KO"


def test_nothing_to_report_while_the_engine_is_fine_or_not_yet_checked() -> None:
    svc, _ = a_monitor()
    svc.central_accepted()
    assert tell(svc) is None
    svc.engine_ok()
    assert tell(svc) is None


def test_fault_is_sent_once_then_recover_once() -> None:
    svc, _ = a_monitor()
    svc.central_accepted()
    svc.engine_ok()
    svc.engine_ko("KO key pressed")
    assert tell(svc) == Fault("KO key pressed")
    svc.engine_ko("KO key pressed")
    assert tell(svc) is None
    svc.engine_unreachable("connection refused")  # still a fault: not told twice
    assert tell(svc) is None
    svc.engine_ok()
    assert tell(svc) == Recover()
    assert tell(svc) is None


def test_an_engine_that_stops_answering_is_a_fault_with_the_reason() -> None:
    svc, _ = a_monitor()
    svc.central_accepted()
    svc.engine_unreachable("nothing within 1.0s")
    report = tell(svc)
    assert isinstance(report, Fault)
    assert "not answering" in report.reason
    assert "1.0s" in report.reason


def test_a_fault_is_told_again_on_each_new_central_link_while_it_lasts() -> None:
    svc, _ = a_monitor()
    svc.central_accepted()
    svc.engine_ko("x")
    assert tell(svc) == Fault("x")
    svc.central_lost()
    svc.central_accepted()  # Central resets a CP's health when it authenticates
    assert tell(svc) == Fault("x")
    assert tell(svc) is None


def test_a_recovery_while_central_was_away_is_told_on_the_next_link() -> None:
    svc, _ = a_monitor()
    svc.central_accepted()
    svc.engine_ko("x")
    assert tell(svc) == Fault("x")
    svc.central_lost()
    svc.engine_ok()
    svc.central_accepted()
    assert tell(svc) == Recover()
    assert tell(svc) is None


@given(st.lists(st.sampled_from(["ok", "ko", "gone", "relink"]), max_size=30))
def test_reports_alternate_fault_recover_and_follow_the_health(events: list[str]) -> None:
    svc, _ = a_monitor()
    svc.central_accepted()
    sent: list[Report] = []
    for event in events:
        if event == "ok":
            svc.engine_ok()
        elif event == "ko":
            svc.engine_ko("ko")
        elif event == "gone":
            svc.engine_unreachable("gone")
        else:
            svc.central_lost()
            svc.central_accepted()
        if (report := tell(svc)) is not None:
            sent.append(report)
    recovers = [i for i, r in enumerate(sent) if isinstance(r, Recover)]
    for i in recovers:  # every RECOVER follows a FAULT
        assert i > 0
        assert isinstance(sent[i - 1], Fault)
    if svc.heartbeat_status == "KO" and svc.has_verdict:
        assert sent
        assert isinstance(sent[-1], Fault)
    if sent and isinstance(sent[-1], Fault) and svc.heartbeat_status == "OK":
        pytest.fail("a recovered Engine left Central believing it faulted")


def test_the_engine_learns_its_cp_id_only_once_central_accepted_it() -> None:
    svc, _ = a_monitor()
    assert not svc.cp_accepted
    assert svc.central_to_tell_engine() is None
    svc.central_lost()
    assert svc.central_to_tell_engine() is False
    svc.central_accepted()
    assert svc.cp_accepted
    assert svc.central_to_tell_engine() is True
    svc.central_denied("unknown CP")
    assert svc.central is CentralLink.DENIED
    assert not svc.cp_accepted
    assert svc.central_to_tell_engine() is False


def test_a_cp_without_credentials_is_not_registered_and_the_engine_hears_central_down() -> None:
    svc, calls = a_monitor()
    svc.engine_ok()
    svc.central_not_registered()
    svc.central_not_registered()
    assert calls.count == 2  # the Engine's verdict, then the state (once)
    assert svc.central is CentralLink.NOT_REGISTERED
    assert not svc.cp_accepted  # no SET_CP
    assert svc.central_to_tell_engine() is False  # CENTRAL#DOWN: no supply can be authorised
    assert svc.troubled
    assert svc.status_line() == (
        "cp=CP01 Engine OK · not registered (register with the Registry first) · "
        "heartbeats 0/0 answered"
    )
    svc.central_accepted()  # registered meanwhile, and authenticated
    assert svc.cp_accepted


def test_loops_are_woken_only_by_changes() -> None:
    svc, calls = a_monitor()
    svc.engine_ok()
    svc.engine_ok()
    assert calls.count == 1
    svc.engine_ko("a")
    svc.engine_ko("b")
    assert calls.count == 2
    svc.central_accepted()
    svc.central_accepted()
    assert calls.count == 3
    svc.central_lost()
    assert calls.count == 4


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.5, 5.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_command_line_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = parse_args(["e:7001", "c:7000", "CP01", "--interval", "0.5"])
    assert (s.engine, s.central, s.cp_id) == (("e", 7001), ("c", 7000), "CP01")
    assert s.timing.interval == 0.5
    monkeypatch.setenv("EV_ENGINE", "e2:1")
    monkeypatch.setenv("EV_CENTRAL", "c2:2")
    monkeypatch.setenv("EV_CP_ID", "CP02")
    s = parse_args([])
    assert (s.engine, s.central, s.cp_id) == (("e2", 1), ("c2", 2), "CP02")


def status_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name.endswith(".monitor")]


def test_one_status_line_per_change_and_none_in_steady_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="evcharging.services.monitor")
    svc, _ = a_monitor()
    svc.engine_ok()
    svc.central_accepted()
    for _ in range(5):  # steady state: checks and heartbeats every second, no line
        svc.engine_ok()
        svc.heartbeat_sent()
        svc.heartbeat_answered()
    svc.engine_ko("fan")
    svc.engine_ko("fan")
    svc.engine_ko("overheat")  # a new reason is a change
    for _ in range(3):  # the Engine gone: said once, not per retry
        svc.engine_unreachable("connection refused")
    svc.central_lost()
    svc.central_lost()
    svc.central_denied("unknown CP")
    svc.central_denied("unknown CP")
    assert status_lines(caplog) == [
        (logging.INFO, "cp=CP01 Engine OK · Central not reached yet · heartbeats 0/0 answered"),
        (logging.INFO, "cp=CP01 Engine OK · Central up (authenticated) · heartbeats 0/0 answered"),
        (
            logging.WARNING,
            "cp=CP01 Engine KO (fan) · Central up (authenticated) · heartbeats 5/5 answered",
        ),
        (
            logging.WARNING,
            "cp=CP01 Engine KO (overheat) · Central up (authenticated) · heartbeats 5/5 answered",
        ),
        (
            logging.WARNING,
            "cp=CP01 Engine not answering: connection refused · Central up (authenticated) · "
            "heartbeats 5/5 answered",
        ),
        (
            logging.WARNING,
            "cp=CP01 Engine not answering: connection refused · Central down (reconnecting) · "
            "heartbeats 5/5 answered",
        ),
        (
            logging.WARNING,
            "cp=CP01 Engine not answering: connection refused · "
            "Central refused the CP: unknown CP · heartbeats 5/5 answered",
        ),
    ]


def test_status_line_counts_unanswered_heartbeats() -> None:
    svc, _ = a_monitor()
    svc.engine_ok()
    svc.central_accepted()
    svc.heartbeat_sent()
    svc.heartbeat_answered()
    svc.heartbeat_sent()  # no answer: the link failed
    svc.central_lost()
    assert svc.status_line() == (
        "cp=CP01 Engine OK · Central down (reconnecting) · heartbeats 1/2 answered"
    )


def test_summary_tells_what_happened_since_the_last_one() -> None:
    svc, _ = a_monitor()
    svc.central_accepted()
    for _ in range(30):
        svc.heartbeat_sent()
        svc.heartbeat_answered()
        svc.engine_ok()
    assert svc.summary_line(30.02) == (
        "cp=CP01 last 30s: heartbeats 30/30 answered, health checks 30/30 OK"
    )
    for _ in range(10):
        svc.heartbeat_sent()
        svc.heartbeat_answered()
    svc.engine_ko("fan")
    svc.engine_ko("fan")
    svc.engine_unreachable("timed out")
    svc.heartbeat_sent()
    svc.central_lost()
    assert svc.summary_line(29.9) == (
        "cp=CP01 last 30s: heartbeats 10/11 answered, health checks 0/3 OK (2 KO, 1 unanswered)"
        " · Engine not answering: timed out · Central down (reconnecting)"
    )
    assert svc.summary_line(30).startswith(
        "cp=CP01 last 30s: heartbeats 0/0 answered, health checks 0/0 OK · "
    )


async def test_the_app_prints_a_summary_periodically_and_none_when_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    nowhere = ("127.0.0.1", free_port())  # nothing listens: the Monitor keeps retrying

    def summaries() -> list[str]:
        return [r.getMessage() for r in caplog.records if " last " in r.getMessage()]

    async def run(every: float, cp_id: str) -> None:
        timing = Timing(interval=0.05, timeout=0.2, max_backoff=0.1)
        app = MonitorApp(
            MonitorSettings(nowhere, nowhere, cp_id, timing=timing, summary_every=every)
        )
        app.start()
        try:
            await eventually(
                lambda: f"cp={cp_id} Engine not answering" in caplog.text, what="status line"
            )
            await eventually(lambda: app.service.counts.checks_unanswered >= 5, what="retries")
            if every:
                await eventually(lambda: len(summaries()) >= 2, what="two summaries")
        finally:
            await app.stop()

    await run(0.2, "ON1")
    assert summaries()[0].startswith("cp=ON1 last 0s: heartbeats 0/0 answered, health checks 0/")
    assert "Engine not answering" in summaries()[0]
    caplog.clear()
    await run(0, "OFF1")
    assert caplog.records  # it ran, and said nothing periodic
    assert summaries() == []


def test_summaries_every_30s_by_default_configurable_and_0_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse_args(["e:1", "c:2", "CP01"]).summary_every == 30
    assert parse_args(["e:1", "c:2", "CP01", "--summary-every", "0"]).summary_every == 0
    monkeypatch.setenv("EV_MONITOR_SUMMARY_EVERY", "5")
    assert parse_args(["e:1", "c:2", "CP01"]).summary_every == 5


@pytest.mark.parametrize(
    "argv",
    [
        ["e:1", "c:2", "CP01", "--summary-every", "-1"],
        ["e:1", "c:2", "CP01", "--summary-every", "often"],
        ["e:1", "c:2", "bad id"],
        ["e:1", "c:2", "CP01", "--interval", "0"],
        ["e", "c:2", "CP01"],
    ],
)
def test_bad_arguments_fail_with_a_message(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


# --- the CP's key (issue 14) ------------------------------------------------------------------


def test_a_granted_key_is_shown_by_its_version_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    svc, calls = a_monitor()
    svc.engine_ok()
    assert svc.key is None
    assert svc.key_text() == "no key"
    key = new_key("CP01", 3)
    svc.central_accepted(key)
    assert svc.key is key
    assert svc.central_text() == "Central up (authenticated, key v3)"
    assert svc.status_line() == (
        "cp=CP01 Engine OK · Central up (authenticated, key v3) · heartbeats 0/0 answered"
    )
    assert calls.count == 3  # the verdict, the key, the link
    assert secret_nowhere(key, caplog.text)


def test_a_revocation_drops_the_key_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    svc, calls = a_monitor()
    svc.engine_ok()
    svc.central_accepted(new_key("CP01", 1))
    caplog.clear()
    before = calls.count

    assert svc.central_revoked_keys(now=100.0)
    for second in range(1, 5):  # Central answers every heartbeat keys_revoked while revoked
        assert not svc.central_revoked_keys(now=100.0 + second)
    assert svc.key is None
    assert svc.keys_revoked
    assert svc.key_text() == "keys revoked"
    assert svc.revocations == 1
    assert calls.count == before + 1
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "cp=CP01: Central revoked this CP's keys: press A to authenticate again")
    ]
    assert svc.troubled
    assert "keys revoked: press A to authenticate again" in svc.status_line()
    assert svc.reauth_in(200.0) is None  # no --auto-reauth: only A

    svc.key_granted(new_key("CP01", 2))
    assert not svc.keys_revoked
    assert svc.key_text() == "key v2"
    assert "authenticated again: new key v2, the CP is back in service" in caplog.text


def test_auto_reauth_is_due_that_long_after_the_revocation() -> None:
    svc = MonitorService("CP01", auto_reauth=30.0)
    svc.central_accepted(new_key("CP01", 1))
    assert svc.reauth_in(50.0) is None
    svc.central_revoked_keys(now=100.0)
    assert "authenticating again in 30s (--auto-reauth), or press A now" in svc.revoked_notice()
    assert svc.reauth_in(110.0) == 20.0
    svc.central_revoked_keys(now=120.0)  # later notices do not move the deadline
    assert svc.reauth_in(130.0) == 0.0
    svc.key_granted(new_key("CP01", 2))
    assert svc.reauth_in(130.0) is None


def test_the_engine_link_hands_each_new_key_once_and_drops_once_per_revocation() -> None:
    svc, _ = a_monitor()
    told = svc.drops_told_at_link_start()
    assert not svc.drop_due(told)
    assert svc.key_to_hand(None) is None  # nothing to hand yet
    v1 = new_key("CP01", 1)
    svc.central_accepted(v1)
    assert svc.key_to_hand(None) is v1
    assert svc.key_to_hand(1) is None  # handed on this link already
    v2 = new_key("CP01", 2)
    svc.key_granted(v2)  # a rotation, or a reconnection to Central
    assert svc.key_to_hand(1) is v2

    svc.central_revoked_keys(now=1.0)
    assert svc.drop_due(told)
    assert svc.key_to_hand(2) is None
    assert svc.drop_due(svc.drops_told_at_link_start())  # a new Engine link is told too
    told = svc.revocations
    assert not svc.drop_due(told)

    svc.key_granted(new_key("CP01", 3))
    assert not svc.drop_due(svc.drops_told_at_link_start())  # a past revocation: not again
    svc.central_revoked_keys(now=2.0)
    svc.key_granted(new_key("CP01", 4))  # revoked and re-granted before the link looked
    assert svc.drop_due(told)  # the Engine still hears the revocation, then gets v4
    assert svc.key_to_hand(3) is not None


def secret_nowhere(key: CpKey, text: str) -> bool:
    forms = (key.secret.hex(), b64(key.secret), base64.b64encode(key.secret).decode())
    return not any(form in text for form in forms) and "secret" not in repr(key)


def test_the_auto_reauth_option(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_args(["e:1", "c:2", "CP01"]).auto_reauth is None
    assert parse_args(["e:1", "c:2", "CP01", "--auto-reauth", "30"]).auto_reauth == 30
    assert parse_args(["e:1", "c:2", "CP01", "--auto-reauth", "0"]).auto_reauth == 0
    monkeypatch.setenv("EV_MONITOR_AUTO_REAUTH", "2.5")
    assert parse_args(["e:1", "c:2", "CP01"]).auto_reauth == 2.5
    app = MonitorApp(parse_args(["e:1", "c:2", "CP01"]))
    assert app.service.auto_reauth == 2.5
    for bad in ("-1", "soon"):
        with pytest.raises(SystemExit):
            parse_args(["e:1", "c:2", "CP01", "--auto-reauth", bad])
