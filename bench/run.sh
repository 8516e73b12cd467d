#!/usr/bin/env bash
# A load run on loopback: populate a platform (a million grants by default),
# start usher on it with a LiveKit key so that admitted joins carry a token,
# start the floor (a bare gRPC server serving the health check and a Join
# that decides nothing), and load each against the other, interleaved in
# short rounds: Check at 8 and 32
# calls in flight, ListPermissions, CheckBatch, Join at 32, Check beside
# lookups and beside an administrator's listings and moves at 8 and 32, Check
# while grants stream in, then durable Grants. Everything started here is
# stopped on the way out, failed or not. make bench runs it.
#
#   BENCH_DURATION  each phase's measured time (default 5s)
#   BENCH_SHAPE     platform flags for populate and the loads, e.g.
#                   "--accounts 10 --workspaces 10 --calltypes 1 --calls 100 --users 100000 --grants 200000"
#                   (add --crowd 200000 for one call with that many grants, which admin pages through)
#   BENCH_HISTORY   change sets of history populate writes, for admin's ListChanges (default 0)
#   BENCH_LOADS     which loads, of check listpermissions checkbatch join lookup admin check-writes grant
#                   (default all, in that order)
#   BENCH_LISTING   more flags for lookup and admin: "--rate 200", "--page-size 1000"
#   BENCH_WRITES    grants a second during the check-writes phase (default 1000)
#   BENCH_JSON      a directory to write each load's figures into, as JSON
#   BENCH_PORT      usher's port (default 7171); the floor takes the next one
set -euo pipefail
usher=${USHER:-bin/usher}
dir=$(mktemp -d)
port=${BENCH_PORT:-7171}
addr=127.0.0.1:$port
floor_addr=127.0.0.1:$((port + 1))
duration=${BENCH_DURATION:-5s}
writes=${BENCH_WRITES:-1000}
history=${BENCH_HISTORY:-0}
read -r -a listing <<<"${BENCH_LISTING:-}"
read -r -a loads <<<"${BENCH_LOADS:-check listpermissions checkbatch join lookup admin check-writes grant}"
read -r -a shape <<<"${BENCH_SHAPE:-}"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# client runs a load client in the background and waits for it, so that a
# signal stops the run at once rather than after the client's phase ends.
client() {
  "$@" &
  local p=$!
  pids+=("$p")
  wait "$p"
}

# await waits until a process started in the background prints $2 into $3.
await() {
  until grep -qs "$2" "$3"; do
    kill -0 "$1" 2>/dev/null || { cat "$3"; echo "bench/run.sh: $1 exited before it said '$2'" >&2; exit 1; }
    sleep 0.05
  done
}

"$usher" bench populate --data "$dir/usher.db" --history "$history" "${shape[@]}"
start=$(date +%s%N)
# The LiveKit secret goes through the environment, never a flag in ps.
USHER_LIVEKIT_API_KEY=bench USHER_LIVEKIT_API_SECRET=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n') \
  "$usher" serve --addr "$addr" --data "$dir/usher.db" >"$dir/serve.out" 2>&1 &
pid=$!
pids+=("$pid")
await "$pid" 'serving gRPC' "$dir/serve.out"
echo "start-up: $(( ($(date +%s%N) - start) / 1000000 )) ms to serving; resident memory: $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$pid/status)"
"$usher" bench floor --addr "$floor_addr" >"$dir/floor.out" 2>&1 &
floor_pid=$!
pids+=("$floor_pid")
await "$floor_pid" 'serving grpc.health.v1' "$dir/floor.out"

common=(--addr "$addr" --server-pid "$pid" --floor "$floor_addr" --floor-pid "$floor_pid" --duration "$duration" "${shape[@]}")
status=0
# load runs one load command, and goes on to the next when it fails (a load
# that errs or a write rate not delivered), so that the run reports them all.
load() {
  local name=$1
  shift
  echo
  echo "== $name: usher bench $*"
  json=()
  if [[ -n ${BENCH_JSON:-} ]]; then
    mkdir -p "$BENCH_JSON"
    json=(--json "$BENCH_JSON/$name.json")
  fi
  client "$usher" bench "$@" "${common[@]}" "${json[@]}" || { status=1; echo "bench/run.sh: usher bench $name failed" >&2; }
}
for l in "${loads[@]}"; do
  case $l in
  check) load check check --concurrency 8,32 ;;
  listpermissions | checkbatch | join) load "$l" "$l" --concurrency 32 ;;
  lookup | admin) load "$l" "$l" --concurrency 8,32 "${listing[@]}" ;;
  check-writes) load check-writes check --concurrency 32 --writes "$writes" ;;
  grant)
    echo
    echo "== usher bench grant"
    client "$usher" bench grant --addr "$addr" --duration "$duration" || status=1
    ;;
  *) echo "bench/run.sh: unknown load $l" >&2; status=1 ;;
  esac
done
exit $status
