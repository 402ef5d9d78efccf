#!/usr/bin/env bash
# Builds the independent OCPP 1.6J charge point the EV_OCPP tests and benchmark talk to: the
# example charge point of github.com/lorenzodonini/ocpp-go (not our code, not the `ocpp` package
# the gateway uses), from the Go module proxy, into .cache/ocpp-go/cp16 (git-ignored).
# `go install pkg@ver` is not used: it also asks the proxy for the module's version list (for
# deprecation notices), which a restricted proxy refuses; a throw-away module that requires the
# exact version needs only that version. Does nothing when the binary and its version stamp are already there.
set -euo pipefail

VERSION="${OCPP_GO_VERSION:-v0.19.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OCPP_GO_DIR:-$ROOT/.cache/ocpp-go}"
BIN="$OUT/cp16"
STAMP="$OUT/cp16.version"

if [ -x "$BIN" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$VERSION" ]; then
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "build-ocpp-go-cp: the Go toolchain (go) is not installed; install Go (Debian: apt-get install golang-go)" >&2
  exit 1
fi

export GOFLAGS=-mod=mod GOTOOLCHAIN=local
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
# into OUT under a private name, then renamed: builds running side by side (test workers) never
# see a half-written binary
{
  go mod init sim &&
    go get "github.com/lorenzodonini/ocpp-go@$VERSION" &&
    go get "github.com/lorenzodonini/ocpp-go/example/1.6/cp@$VERSION" &&
    go build -o "$OUT/.cp16.$$" github.com/lorenzodonini/ocpp-go/example/1.6/cp
} >"$WORK/build.log" 2>&1 || {
  rm -f "$OUT/.cp16.$$"
  echo "build-ocpp-go-cp: building ocpp-go $VERSION's example charge point failed:" >&2
  tail -n 20 "$WORK/build.log" >&2
  exit 1
}
mv -f "$OUT/.cp16.$$" "$BIN"
echo "$VERSION" >"$STAMP"
echo "build-ocpp-go-cp: built $BIN (ocpp-go $VERSION)"
