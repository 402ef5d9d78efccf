"""Three test hosts on one machine: Linux network namespaces joined by veth pairs to a bridge.

The bridge lives in a namespace of its own, so no test traffic touches the machine's own network
stack. Everything is made and removed by the test (needs root and iproute2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SUBNET = "10.231.77"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class Host:
    name: str
    netns: str
    address: str


def can_make_namespaces() -> str | None:
    """None if namespaces can be made here, else why not."""
    probe = f"evprobe{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        return f"cannot create network namespaces here: {detail.strip()}"
    _ip("netns", "del", probe)
    return None


@contextmanager
def three_hosts() -> Iterator[dict[str, Host]]:
    tag = uuid.uuid4().hex[:5]
    hub = f"evhub{tag}"
    hosts = {
        name: Host(name, f"ev{name}{tag}", f"{SUBNET}.{i}") for i, name in enumerate("ABC", start=1)
    }
    made: list[str] = []
    try:
        _ip("netns", "add", hub)
        made.append(hub)
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        for host in hosts.values():
            _ip("netns", "add", host.netns)
            made.append(host.netns)
            inner, outer = f"e{host.name}{tag}", f"b{host.name}{tag}"
            _ip(
                "link",
                "add",
                inner,
                "netns",
                host.netns,
                "type",
                "veth",
                "peer",
                "name",
                outer,
                "netns",
                hub,
            )
            _ip("-n", hub, "link", "set", outer, "master", "br0", "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", inner)
            _ip("-n", host.netns, "link", "set", inner, "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
        yield hosts
    finally:
        for ns in reversed(made):
            _kill_everything_in(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _kill_everything_in(netns: str) -> None:
    """A test that failed half-way may leave programs in a namespace: none may outlive it."""
    out = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, check=False
    )
    for pid in out.stdout.split():
        subprocess.run(["kill", "-9", pid], capture_output=True, check=False)


def run_in(
    host: Host, *argv: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A command run to its end on `host`; `env` is added to the test's environment."""
    return subprocess.run(
        ["ip", "netns", "exec", host.netns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **env} if env else None,
    )


def http_in(
    host: Host, method: str, url: str, token: str | None = None, cafile: Path | None = None
) -> tuple[int, object]:
    """An HTTP request made from inside a host's namespace (the test itself stays outside); an
    https URL is verified against `cafile` (the network's CA)."""
    code = (
        "import json,ssl,sys,urllib.request,urllib.error\n"
        "r=urllib.request.Request(sys.argv[2],method=sys.argv[1],headers=json.loads(sys.argv[3]))\n"
        "c=ssl.create_default_context(cafile=sys.argv[4]) if sys.argv[4] else None\n"
        "try:\n"
        " with urllib.request.urlopen(r,timeout=5,context=c) as f:\n"
        "  print(f.status); print(f.read().decode())\n"
        "except urllib.error.HTTPError as e: print(e.code); print('null')\n"
    )
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ca = str(cafile) if cafile else ""
    done = run_in(
        host, sys.executable, "-c", code, method, url, json.dumps(headers), ca, timeout=20
    )
    if done.returncode != 0:
        return 0, done.stderr
    status, _, body = done.stdout.partition("\n")
    return int(status), json.loads(body or "null")


BIN = Path(sys.executable).parent
