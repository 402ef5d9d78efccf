"""`python -m bench [--quick] [all|auth|fault|telemetry|scale|profile|seal|holds|encryption|ocpp|report]`.

Starts a Kafka broker of its own on free ports (or uses `--kafka`), runs the benchmarks
asked for against fresh EV_Central processes, writes docs/bench/<name>.json, then
docs/performance.md. `all` (the default, what `make bench` runs) stays within `--budget` seconds.

Encryption (issue 14): `--encryption on` (the default) or `off` (Central with `--cp-encryption
off`, the load generator plain too); `both` alternates the two in one sitting (`auth`, `holds`).
`seal` is the encrypt+decrypt micro-benchmark; `holds` runs each `--n` `--repeat` times per mode;
`encryption` is the whole comparison in one sitting: seal, auth both, holds both.

`ocpp` (issue 16): OCPP chargers at one MeterValues a second against one EV_OCPP, N stepped up
until it fails (`--n` to choose, `--py-spy` to profile the gateway); not part of `all` (its ramp
is one scrypt per charger: minutes at N = 1,000s).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import time
from dataclasses import replace
from typing import Any

from bench import auth, encryption, fault, ocpp, report, scale, seal
from bench.context import Context
from bench.harness import REPO, broker, raise_fd_limit, utc_now, warm_up_broker, write_result

log = logging.getLogger("bench")

COMMANDS = (
    "all",
    "auth",
    "fault",
    "telemetry",
    "scale",
    "profile",
    "seal",
    "holds",
    "encryption",
    "ocpp",
    "report",
)
BOTH_OK = ("auth", "holds", "encryption")  # the commands that can run both modes in one sitting
NO_BROKER = ("seal", "report")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("command", nargs="?", default="all", choices=COMMANDS)
    p.add_argument("--quick", action="store_true", help="small N and short windows: a smoke run")
    p.add_argument("--kafka", help="HOST:PORT of a running broker (default: start one)")
    p.add_argument(
        "--n", type=int, action="append", help="scale/telemetry/profile/ocpp: N (repeatable)"
    )
    p.add_argument("--steady", type=float, help="scale/ocpp: seconds of steady state per N")
    p.add_argument("--workers", type=int, default=0, help="load generator processes (0: auto)")
    p.add_argument("--requests", type=int, help="auth: requests measured")
    p.add_argument("--samples", type=int, help="fault: samples per path")
    p.add_argument(
        "--budget", type=float, default=840.0, help="all: seconds the whole suite may take"
    )
    p.add_argument(
        "--phase", choices=("steady", "ramp"), default="steady", help="profile: which phase"
    )
    p.add_argument("--keep", action="store_true", help="keep the work folder (.run/bench/...)")
    p.add_argument(
        "--encryption",
        choices=("on", "off", "both"),
        help="per-CP keys on (default), off (Central --cp-encryption off), or both alternately "
        "(auth, holds; the default of holds and encryption)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=encryption.REPEAT,
        help="auth/holds/encryption: runs per mode (and per N), counterbalanced: on, off, off, on, ...",
    )
    p.add_argument("--messages", type=int, help="seal: messages timed per path")
    p.add_argument(
        "--py-spy", action="store_true", help="ocpp: profile the gateway in the steady window"
    )
    args = p.parse_args(argv)
    if args.encryption is None:
        args.encryption = "both" if args.command in ("holds", "encryption") else "on"
    if args.encryption == "both" and args.command not in BOTH_OK:
        p.error(f"--encryption both is for {', '.join(BOTH_OK)}; {args.command} runs one mode")
    if args.command == "encryption" and args.encryption != "both":
        p.error("encryption compares both modes: leave out --encryption (or give both)")
    if args.command == "ocpp" and args.encryption != "on":
        p.error("ocpp runs with per-CP keys on: the gateway needs Central's key grants")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def _modes(args: argparse.Namespace) -> tuple[str, ...]:
    return encryption.MODES if args.encryption == "both" else (args.encryption,)


def _scale_params(args: argparse.Namespace) -> scale.ScaleParams:
    params = scale.ScaleParams.quick() if args.quick else scale.ScaleParams()
    params = replace(params, workers=args.workers)
    if args.steady:
        params = replace(params, steady_s=args.steady)
    if args.n:
        params = replace(params, sizes=tuple(sorted(args.n)))
    return params


def _seal(args: argparse.Namespace) -> None:
    params = seal.SealParams.quick() if args.quick else seal.SealParams()
    if args.messages:
        params = replace(params, messages=args.messages)
    seal.run(params)


def _holds_params(args: argparse.Namespace) -> scale.ScaleParams:
    params = _scale_params(args)
    if not args.n:
        sizes = encryption.QUICK_HOLD_SIZES if args.quick else encryption.HOLD_SIZES
        params = replace(params, sizes=sizes)
    return params


async def _run(args: argparse.Namespace, ctx: Context) -> None:
    cmd = args.command
    if cmd == "encryption":
        _seal(args)  # first, while the broker is idle: the primitive's figures on a quiet machine
    if ctx.broker_pid:  # a broker of ours, just started: its JIT warm-up is not Central's cost
        log.info(
            "broker warm-up: %d messages", await warm_up_broker(ctx.kafka, 3 if args.quick else 8)
        )
    if cmd in ("all", "auth", "encryption"):
        params = auth.AuthParams.quick() if args.quick else auth.AuthParams()
        if args.requests:
            params = replace(params, requests=args.requests)
        if args.encryption == "both":  # auth --encryption both, or the encryption sitting
            await encryption.auth_sitting(ctx, params, _modes(args), args.repeat)
        else:
            log.info("authorisation: %s", (await auth.run(ctx, params))["request_to_response"])
    if cmd in ("holds", "encryption"):
        await encryption.holds_sitting(ctx, _holds_params(args), _modes(args), args.repeat)
    if cmd in ("all", "fault"):
        fparams = fault.FaultParams.quick() if args.quick else fault.FaultParams()
        if args.samples:
            fparams = replace(fparams, samples=args.samples)
        result = await fault.run(ctx, fparams)
        log.info("fault: %s", {k: v.get("p99_ms") for k, v in result["admin_to_driver"].items()})
    if cmd in ("all", "scale"):
        params_s = replace(_scale_params(args), telemetry_n1000=cmd == "all" and not args.quick)
        await scale.sweep(ctx, params_s, merge=bool(args.n))
    if cmd == "telemetry":
        params_t = replace(_scale_params(args), sizes=tuple(args.n or [1000]))
        run = await scale.measure(ctx, params_t.sizes[0], params_t)
        scale.write_telemetry(run, params_t)
        scale.save([run], params_t, "", merge=True)
    if cmd == "profile":
        await _profile(ctx, replace(_scale_params(args), profile=args.phase))
    if cmd == "ocpp":
        await ocpp.sweep(ctx, _ocpp_params(args))


def _ocpp_params(args: argparse.Namespace) -> ocpp.OcppParams:
    params = ocpp.OcppParams.quick() if args.quick else ocpp.OcppParams()
    params = replace(params, workers=args.workers, profile=args.py_spy)
    if args.steady:
        params = replace(params, steady_s=args.steady)
    if args.n:
        params = replace(params, sizes=tuple(sorted(args.n)))
    return params


async def _profile(ctx: Context, params: scale.ScaleParams) -> None:
    n = params.sizes[0] if len(params.sizes) == 1 else 1000
    run = await scale.measure(ctx, n, params)
    results: dict[str, Any] = {"n": n, "holds": run.holds, "failures": run.failures}
    results |= run.figures
    parameters = {"n": n, "phase": params.profile, "steady_s": params.steady_s, "rate_hz": 100}
    write_result(f"profile-{params.profile}", parameters, results)


def _transient_kafka(record: logging.LogRecord) -> bool:
    """aiokafka logs ERROR while a new broker elects its group coordinator; it retries."""
    text = record.getMessage()
    return not any(
        known in text
        for known in ("CoordinatorNotAvailable", "Unable connect", "Unable to update metadata")
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:  # a logger's filter would miss its children
        handler.addFilter(_transient_kafka)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.command in NO_BROKER:
        if args.command == "seal":
            _seal(args)
        report.write()
        return 0
    raise_fd_limit()
    started = time.monotonic()
    workdir = REPO / ".run" / "bench" / utc_now().replace(":", "")
    workdir.mkdir(parents=True, exist_ok=True)
    log.info("work folder %s", workdir)
    try:
        with broker(workdir, args.kafka) as (kafka, broker_pid):
            ctx = Context(
                kafka,
                broker_pid,
                workdir,
                args.quick,
                started + args.budget,
                encryption=args.encryption != "off",
            )
            asyncio.run(_run(args, ctx))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report.write()
    log.info("done in %.0f s", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
