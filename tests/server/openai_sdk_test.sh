#!/usr/bin/env bash
# Runs openai_sdk_test.py (the official `openai` SDK) against `mosaic serve`
# on 127.0.0.1 with builtin:tiny. The SDK comes from PyPI into a venv under
# the build directory; when that venv cannot be made (no network, no
# ensurepip) the test is skipped (exit 77).
#
#   openai_sdk_test.sh <mosaic binary> <venv dir>
set -u
mosaic="$1"
venv="$2"
here="$(cd "$(dirname "$0")" && pwd)"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
  python3 -m venv "$venv" >/dev/null 2>&1 || { echo "SKIP: cannot create a venv"; exit 77; }
  timeout 300 "$venv/bin/pip" install --quiet "openai>=1.30,<2" >/dev/null 2>&1 ||
    { echo "SKIP: cannot install the openai package from PyPI"; exit 77; }
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "sk-sdk-test-key-1 sdk" > "$work/keys"
export MOSAIC_HOME="$work/home"
"$mosaic" serve --model builtin:tiny --http-port 0 --library "$work/library" \
  --api-keys "$work/keys" > "$work/serve.log" 2>&1 &
server_pid=$!

port=""
for _ in $(seq 1 600); do # at most 60 s
  port="$(sed -n 's|^HTTP front door: http://127\.0\.0\.1:\([0-9]*\)/v1.*|\1|p' "$work/serve.log")"
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$port" ]; then
  echo "mosaic serve did not start:"
  cat "$work/serve.log"
  exit 1
fi

MOSAIC_BASE_URL="http://127.0.0.1:$port/v1" MOSAIC_API_KEY="sk-sdk-test-key-1" \
  timeout 240 "$venv/bin/python" "$here/openai_sdk_test.py"
