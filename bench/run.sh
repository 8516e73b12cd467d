#!/usr/bin/env bash
# A short load run on loopback: populate a platform of a million grants,
# start usher on it, load Check against the health check, Check while grants
# stream in, and durable Grants; then stop the server. make bench runs it.
set -euo pipefail
usher=${USHER:-bin/usher}
dir=$(mktemp -d)
addr=127.0.0.1:${BENCH_PORT:-7171}
duration=${BENCH_DURATION:-5s}
trap 'kill "${pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT

"$usher" bench populate --data "$dir/usher.db"
start=$(date +%s%N)
"$usher" serve --addr "$addr" --data "$dir/usher.db" >"$dir/serve.out" 2>&1 &
pid=$!
until grep -q 'serving gRPC' "$dir/serve.out"; do
  kill -0 "$pid" 2>/dev/null || { cat "$dir/serve.out"; exit 1; }
  sleep 0.05
done
echo "start-up: $(( ($(date +%s%N) - start) / 1000000 )) ms to serving; resident memory: $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$pid/status)"
"$usher" bench check --addr "$addr" --duration "$duration"
"$usher" bench check --addr "$addr" --duration "$duration" --writes 100
"$usher" bench grant --addr "$addr" --duration "$duration"
