"""The independent OCPP 1.6J charge point for EV_OCPP's tests and benchmark: ocpp-go's example CP.

Why a Go program: a charger written by someone else, with another OCPP library, is what shows
the gateway speaks OCPP and not just "what our own Python kit sends". It is built once from the
Go module proxy by scripts/build-ocpp-go-cp.sh (`make ocpp-go-cp`) into .cache/ocpp-go/cp16.

What the binary does (ocpp-go v0.19.0, example/1.6/cp/charge_point_sim.go), once connected to
`CENTRAL_SYSTEM_URL` + "/" + `CLIENT_ID` with subprotocol ocpp1.6: BootNotification; StatusNotification
connector 0 Available; SecurityEventNotification; LogStatusNotification; SignCertificate; ~5 s;
Authorize "12345"; StatusNotification 1 Preparing; StartTransaction (connector 1, id tag 12345,
meter 0); Charging; five MeterValues 5 s apart (+10 Wh each, Energy.Active.Export.Register);
Finishing; StopTransaction (reason EVDisconnected, meter 52); Available; then it idles 5 minutes
and disconnects. It answers the central system's calls (RemoteStart/Stop, ChangeAvailability,
TriggerMessage, Reset, ...). It logs at Error level only (logrus text on stderr): a CALLERROR, an
invalid or late answer to any of its requests ends it by log.Fatal (exit code 1, `level=fatal`);
a failed connection is logged (`level=error`) and it exits with code 0. Gorilla's websocket client refuses user:pass
in a URL, so it cannot do HTTP Basic auth: with EV_OCPP it uses security profile 3 (wss and a
client certificate, `certs.issue_client`), or no security at all (plain ws).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import Proc

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "build-ocpp-go-cp.sh"
GO_CP_VERSION = "v0.19.0"  # the script's default; the stamp next to the binary says what was built
GO_CP_DIR = ROOT / ".cache" / "ocpp-go"
GO_CP = GO_CP_DIR / "cp16"
GO_CP_STAMP = GO_CP_DIR / "cp16.version"


class GoChargePointUnavailable(RuntimeError):
    """The Go charge point is not built and cannot be (no Go toolchain, no module proxy)."""


def go_cp_binary() -> Path:
    """The ocpp-go charge point's binary, built first if it is missing (`make ocpp-go-cp`)."""
    if _built() == GO_CP_VERSION and os.access(GO_CP, os.X_OK):
        return GO_CP
    try:
        done = subprocess.run(
            [str(BUILD_SCRIPT)],
            env={**os.environ, "OCPP_GO_VERSION": GO_CP_VERSION},
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GoChargePointUnavailable(f"cannot run {BUILD_SCRIPT}: {exc}") from None
    if done.returncode != 0 or not GO_CP.is_file():
        why = done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}"
        raise GoChargePointUnavailable(
            f"ocpp-go's charge point is not built and {BUILD_SCRIPT.name} failed "
            f"(run `make ocpp-go-cp`): {why}"
        )
    return GO_CP


def _built() -> str:
    try:
        return GO_CP_STAMP.read_text().strip()
    except OSError:
        return ""


def go_cp_env(
    cp_id: str,
    url: str,
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> dict[str, str]:
    """The environment the Go charge point reads. `url` is the gateway's base URL
    (`ws://host:port` or `wss://host:port`): the program connects to URL + "/" + id (ocppj's
    `fmt.Sprintf("%v/%v")`), so a trailing slash is taken off here (it would make `//id`).
    TLS is on for wss: `ca` is the network's ca.pem, `cert` and `key` the charger's client
    certificate (security profile 3)."""
    env = {"CLIENT_ID": cp_id, "CENTRAL_SYSTEM_URL": url.rstrip("/")}
    if url.startswith("wss://"):
        env["TLS_ENABLED"] = "true"
        if ca is not None:
            env["CA_CERTIFICATE_PATH"] = str(ca)
        if cert is not None and key is not None:
            env["CLIENT_CERTIFICATE_PATH"] = str(cert)
            env["CLIENT_CERTIFICATE_KEY_PATH"] = str(key)
    elif ca or cert or key:
        raise ValueError("certificates need a wss:// URL")
    return env


def start_go_cp(
    workdir: Path,
    cp_id: str,
    url: str,
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    name: str | None = None,
) -> Proc:
    """Start one Go charge point; its stdout+stderr go to WORKDIR/NAME.log (the Proc's output).
    Only errors are printed: wait on the gateway's side for what it did."""
    binary = go_cp_binary()
    label = name or f"ocpp-go-{cp_id}"
    log = workdir / f"{label}.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CLIENT_", "CA_", "TLS_"))},
        **go_cp_env(cp_id, url, ca=ca, cert=cert, key=key),
    }
    with log.open("ab") as handle:
        popen = subprocess.Popen(
            [str(binary)],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    return Proc(label, popen, log)


@contextmanager
def go_cp(
    workdir: Path,
    cp_id: str,
    url: str,
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    name: str | None = None,
) -> Iterator[Proc]:
    """`start_go_cp`, stopped (SIGTERM, then SIGKILL) when the block ends."""
    proc = start_go_cp(workdir, cp_id, url, ca=ca, cert=cert, key=key, name=name)
    try:
        yield proc
    finally:
        proc.terminate()
