#!/usr/bin/env bash
# DES vs live validation (issue: the DES and live runs of the same workload
# agree on mean TTFT and throughput within 20% on the machine that made the
# profile). Each repeat measures a fresh profile (`mosaic bench --profile`),
# then runs `mosaic sim compare --des-profile` on mmdu: the live in-process
# cluster and the DES replay of the same requests, per policy; the DES/live
# ratios of every repeat are printed at the end.
#
# Usage: bench/des_vs_live.sh [REPEATS] [OUT_DIR]    (after scripts/build)
#   DURATION=60 RATE=0.25 POLICIES=full,prefix,mpic:32 MOSAIC=build/cli/mosaic
# Takes about (90 + 3 x DURATION) s per repeat. Run it on an otherwise idle
# machine: other jobs on the cores change the live timings between the
# profile and the run (docs/sim.md, "Measured").
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-2}
out=${2:-des-vs-live}
mosaic=${MOSAIC:-build/cli/mosaic}
duration=${DURATION:-60}
rate=${RATE:-0.25}
policies=${POLICIES:-full,prefix,mpic:32}
w=(--workload mmdu --seed 1 --rate "$rate" --duration "$duration" --max-turns 2 --max-images 2
   --max-output-tokens 8)
mkdir -p "$out"
[[ -d $out/images ]] || "$mosaic" sim images "${w[@]}" --out "$out/images" >/dev/null
[[ -d $out/library ]] || "$mosaic" cache build --model builtin:small --library "$out/library" \
  --images "$out/images" --shared sim >/dev/null
for r in $(seq 1 "$repeats"); do
  d="$out/run$r"
  mkdir -p "$d"
  echo "== repeat $r: profile (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  "$mosaic" bench --profile --model builtin:small --out "$d/profile.json" >"$d/profile.log" 2>&1
  echo "== repeat $r: live vs DES"
  "$mosaic" sim compare "${w[@]}" --model builtin:small --library "$out/library" \
    --policies "$policies" --des-profile "$d/profile.json" --out "$d/compare" >"$d/compare.log" 2>&1
  sed -n '/^DES vs live/,/^report:/p' "$d/compare.log" | grep -v '^report:'
done
echo "== DES/live ratios per repeat (limit 0.80..1.20)"
for r in $(seq 1 "$repeats"); do
  python3 - "$out/run$r/compare/summary.json" "$r" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
cells = [f"{v['policy']}: TTFT {v['ttft_ratio_des_to_live']:.2f} tput {v['output_throughput_ratio_des_to_live']:.2f}"
         for v in d["des_validation"]]
print(f"repeat {sys.argv[2]}: " + "; ".join(cells))
PY
done
