# Sourced by shell tests that drive a real `mosaic serve`: a work directory
# removed at exit, and `start_mosaic_serve MOSAIC KEYS_FILE [MODEL]`, which
# starts MODEL (default builtin:tiny; any `serve --model` value, such as an
# HF directory) on ephemeral HTTP and ZeroMQ ports of 127.0.0.1 with those
# API keys and sets `server_pid` and `port` (exits 1 with the server's log
# when it does not come up within 60 s). The server is stopped at exit.
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

start_mosaic_serve() {
  local mosaic="$1" keys="$2" model="${3:-builtin:tiny}"
  export MOSAIC_HOME="$work/home"
  "$mosaic" serve --model "$model" --http-port 0 --zmq-port 0 --library "$work/library" \
    --api-keys "$keys" > "$work/serve.log" 2>&1 &
  server_pid=$!
  port=""
  for _ in $(seq 1 600); do # at most 60 s
    port="$(sed -n 's|^HTTP front door: http://127\.0\.0\.1:\([0-9]*\)/v1.*|\1|p' "$work/serve.log" 2>/dev/null)"
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    echo "mosaic serve did not start:"
    cat "$work/serve.log"
    exit 1
  fi
}
