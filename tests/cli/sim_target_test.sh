#!/usr/bin/env bash
# `mosaic sim compare --target http://...` end to end: starts `mosaic serve`
# (builtin:tiny, API keys, ephemeral port on 127.0.0.1), drives it with a
# short gqa workload for two policies (+ full), and checks the table and
# the report.
#
#   sim_target_test.sh <mosaic binary>
set -u
mosaic="$1"

# shellcheck source=../support/mosaic_serve.sh
. "$(cd "$(dirname "$0")" && pwd)/../support/mosaic_serve.sh"

echo "sk-sim-target-key-1 simtenant" > "$work/keys"
start_mosaic_serve "$mosaic" "$work/keys"

fail() {
  echo "FAIL: $*"
  exit 1
}

# A wrong key: refused with the server's message, quickly.
if timeout 30 "$mosaic" sim run --target "http://127.0.0.1:$port" --api-key sk-wrong-key-000 \
  --workload gqa --rate 4 --duration 1 --out "$work/nope" > "$work/wrong.log" 2>&1; then
  fail "a wrong API key was accepted"
fi
grep -q "HTTP 401" "$work/wrong.log" || { cat "$work/wrong.log"; fail "no 401 in the error"; }

timeout 240 "$mosaic" sim compare --target "http://127.0.0.1:$port" --api-key sk-sim-target-key-1 \
  --workload gqa --seed 3 --rate 4 --duration 1 --max-output-tokens 4 --policies prefix,mpic:4 \
  --out "$work/cmp" > "$work/cmp.log" 2>&1 || { cat "$work/cmp.log"; fail "sim compare failed"; }
cat "$work/cmp.log"
for p in full prefix mpic:4; do
  # policy, done > 0, failed 0, a TTFT
  grep -Eq "^$p +[1-9][0-9]* +0 +[0-9]+\.[0-9]+" "$work/cmp.log" || fail "no row for $p"
done
grep -q '"target": "mosaic at http://127.0.0.1:' "$work/cmp/summary.json" ||
  fail "summary.json does not name the front door"
[ "$(wc -l < "$work/cmp/requests.csv")" -gt 3 ] || fail "requests.csv has too few lines"
echo "PASS"
