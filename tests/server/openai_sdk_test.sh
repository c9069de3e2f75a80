#!/usr/bin/env bash
# Runs openai_sdk_test.py (the official `openai` SDK, and prometheus-client's
# text-format parser on /metrics) and then the same API with curl against
# `mosaic serve` on 127.0.0.1 with builtin:tiny. The Python packages come
# from PyPI into a venv under the build directory; when that venv cannot be
# made (no network, no ensurepip) the test is skipped (exit 77).
#
#   openai_sdk_test.sh <mosaic binary> <venv dir>
set -u
mosaic="$1"
venv="$2"
here="$(cd "$(dirname "$0")" && pwd)"

if [ ! -x "$venv/bin/python" ] ||
   ! "$venv/bin/python" -c "import openai, prometheus_client" 2>/dev/null; then
  python3 -m venv "$venv" >/dev/null 2>&1 || { echo "SKIP: cannot create a venv"; exit 77; }
  timeout 300 "$venv/bin/pip" install --quiet "openai>=1.30,<2" "prometheus-client>=0.17" \
    >/dev/null 2>&1 || { echo "SKIP: cannot install openai / prometheus-client from PyPI"; exit 77; }
fi

# shellcheck source=../support/mosaic_serve.sh
. "$(cd "$(dirname "$0")" && pwd)/../support/mosaic_serve.sh"

key="sk-sdk-test-key-1"
other_key="sk-other-tenant-2"
printf '%s sdk\n%s other\n' "$key" "$other_key" > "$work/keys"
start_mosaic_serve "$mosaic" "$work/keys"
base="http://127.0.0.1:$port/v1"

MOSAIC_BASE_URL="$base" MOSAIC_API_KEY="$key" MOSAIC_OTHER_KEY="$other_key" \
  timeout 240 "$venv/bin/python" "$here/openai_sdk_test.py" || exit 1

# -- the same API with curl ------------------------------------------------------------
fail() { echo "curl test failed: $*"; exit 1; }
# curl -s -o BODY -w STATUS ...: prints the HTTP status, the body goes to $work/body.
call() { curl -s --max-time 120 -o "$work/body" -w '%{http_code}' "$@"; }

"$venv/bin/python" - "$work/image.png" <<'PY'
import os, struct, sys, zlib
size = 56
raw = b"".join(b"\x00" + os.urandom(size * 3) for _ in range(size))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)) +
       chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
open(sys.argv[1], "wb").write(png)
PY
image_url="data:image/png;base64,$(base64 -w0 "$work/image.png")"
chat_body() { # chat_body IMAGE_URL STREAM
  printf '{"model":"builtin:tiny","max_tokens":5,"temperature":0,"stream":%s,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"%s"}},{"type":"text","text":"What is in the image?"}]}]}' "$2" "$1"
}
auth=(-H "Authorization: Bearer $key")
json=(-H "Content-Type: application/json")

chat_body "$image_url" false > "$work/req.json"
status=$(call "${auth[@]}" "${json[@]}" --data-binary @"$work/req.json" "$base/chat/completions")
[ "$status" = 200 ] || fail "whole chat: $status $(cat "$work/body")"
grep -q '"object":"chat.completion"' "$work/body" || fail "whole chat body: $(cat "$work/body")"

chat_body "$image_url" true > "$work/req.json"
status=$(call -N "${auth[@]}" "${json[@]}" --data-binary @"$work/req.json" "$base/chat/completions")
[ "$status" = 200 ] || fail "streamed chat: $status"
grep -q '"object":"chat.completion.chunk"' "$work/body" || fail "no chunks: $(cat "$work/body")"
[ "$(grep '^data: ' "$work/body" | tail -n 1)" = "data: [DONE]" ] || fail "no [DONE]: $(cat "$work/body")"

status=$(call "${auth[@]}" -H "Content-Type: image/png" --data-binary @"$work/image.png" \
  "$base/mosaic/images")
[ "$status" = 200 ] || fail "upload: $status $(cat "$work/body")"
ref=$(sed -n 's|.*"url":"\(mosaic://library/[0-9a-f]*\)".*|\1|p' "$work/body")
[ -n "$ref" ] || fail "upload answer: $(cat "$work/body")"
chat_body "$ref" false > "$work/req.json"
status=$(call "${auth[@]}" "${json[@]}" --data-binary @"$work/req.json" "$base/chat/completions")
[ "$status" = 200 ] || fail "chat by reference: $status $(cat "$work/body")"
status=$(call -H "Authorization: Bearer $other_key" "${json[@]}" --data-binary @"$work/req.json" \
  "$base/chat/completions")
[ "$status" = 404 ] || fail "another tenant's reference: $status $(cat "$work/body")"

status=$(call -H "Authorization: Bearer sk-wrong-key-00" "${json[@]}" \
  --data-binary @"$work/req.json" "$base/chat/completions")
[ "$status" = 401 ] || fail "wrong key: $status"
status=$(call "${auth[@]}" "${json[@]}" --data-binary '{"model": ' "$base/chat/completions")
[ "$status" = 400 ] || fail "malformed JSON: $status"
grep -q '"type":"invalid_request_error"' "$work/body" || fail "error body: $(cat "$work/body")"
chat_body "data:image/png;base64,AAAA" false > "$work/req.json"
status=$(call "${auth[@]}" "${json[@]}" --data-binary @"$work/req.json" "$base/chat/completions")
[ "$status" = 400 ] || fail "undecodable image: $status"

status=$(call "http://127.0.0.1:$port/metrics")
[ "$status" = 200 ] || fail "/metrics: $status"
grep -q '^mosaic:request_success_total{finished_reason=' "$work/body" || fail "no success counter"
status=$(call "http://127.0.0.1:$port/health")
[ "$status" = 200 ] || fail "/health: $status"
echo "curl test passed"
