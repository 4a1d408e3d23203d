#!/usr/bin/env bash
# The whole product in one command: our registry, package + push SmolLM2 with its card, then as a fresh user
# (empty MODELCTL_HOME, Docker Hub names mirrored to the local registry): fit, pull, list, run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
MODEL=.cache/models/SmolLM2-135M-Instruct-Q4_1.gguf
WORK=$(mktemp -d)
PORT=$($BIN/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
cleanup() { [ -n "${REG_PID:-}" ] && kill "$REG_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step "modelctl registry serve --root $WORK/registry --addr $REG &"
$BIN/modelctl registry serve --root "$WORK/registry" --addr "$REG" &
REG_PID=$!
for _ in $(seq 100); do curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.1; done

export MODELCTL_HOME=$WORK/publisher SOURCE_DATE_EPOCH=1735689600
CARD=cards/ai/smollm2.md
[ -f "$CARD" ] || CARD=""
step "modelctl package --gguf $MODEL --context-size 8192 ${CARD:+--card $CARD} --push $REG/ai/smollm2:135M-Q4_1 $REG/ai/smollm2:latest"
$BIN/modelctl package --gguf "$MODEL" --context-size 8192 ${CARD:+--card "$CARD"} --push \
  "$REG/ai/smollm2:135M-Q4_1" "$REG/ai/smollm2:latest"

export MODELCTL_HOME=$WORK/user MODELCTL_MIRRORS=docker.io=http://$REG
unset SOURCE_DATE_EPOCH
echo; echo "A fresh user: MODELCTL_HOME=$MODELCTL_HOME MODELCTL_MIRRORS=$MODELCTL_MIRRORS"
step "modelctl fit ai/smollm2        # from the registry, before any weights are downloaded"
$BIN/modelctl fit ai/smollm2
step "modelctl card ai/smollm2 --raw | head -12   # the card pushed with the model (an OCI referrer)"
$BIN/modelctl card ai/smollm2 --raw | head -12
step "modelctl pull ai/smollm2"
$BIN/modelctl pull ai/smollm2
step "modelctl list"
$BIN/modelctl list
step "modelctl run ai/smollm2 --temperature 0 --system 'Answer in one short sentence.' 'What is the capital of France?'"
$BIN/modelctl run ai/smollm2 --temperature 0 --system "Answer in one short sentence." "What is the capital of France?"
