#!/usr/bin/env bash
# The scale table: for 200,000, 1,000,000 and 10,000,000 grants, populate a
# data file, time Check in process on it (usher bench inprocess: the index
# built as usher serve builds it, Check over 30,000 distinct queries and over
# 1,024), start usher serve on it and time its start-up to serving, then load
# Check over gRPC beside the floor at 8 and 32 in flight, replaying the same
# queries. Each size's server is stopped and its data file removed before
# the next. Prints a row per size; the outputs and JSON stay in SCALE_OUT.
#
#   SCALE_SIZES     which sizes, of 200k 1m 10m (default all three)
#   BENCH_DURATION  each load phase's measured time (default 10s)
#   SCALE_DIR       where the data files go (default a temporary directory);
#                   10m needs about 3 GiB there and 8 GiB of memory
#   SCALE_OUT       where the outputs and JSON go (default SCALE_DIR/out)
#   BENCH_PORT      usher's port (default 7171); the floor takes the next one
set -euo pipefail
usher=${USHER:-bin/usher}
command -v jq >/dev/null || { echo "bench/scale.sh: the table needs jq" >&2; exit 1; }
dir=${SCALE_DIR:-$(mktemp -d)}
mkdir -p "$dir"
out=${SCALE_OUT:-$dir/out}
mkdir -p "$out"
port=${BENCH_PORT:-7171}
addr=127.0.0.1:$port
floor_addr=127.0.0.1:$((port + 1))
duration=${BENCH_DURATION:-10s}
read -r -a sizes <<<"${SCALE_SIZES:-200k 1m 10m}"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$dir"/scale-*.db
  echo "outputs in $out"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

shape() {
  case $1 in
  200k) echo "--accounts 10 --workspaces 10 --calltypes 1 --calls 100 --users 100000 --grants 200000 --blocks 2000" ;;
  1m) echo "--accounts 100 --workspaces 10 --calltypes 4 --calls 24 --users 200000 --grants 1000000 --blocks 2000" ;;
  10m) echo "--accounts 100 --workspaces 10 --calltypes 10 --calls 100 --users 1000000 --grants 10000000 --blocks 20000" ;;
  *) echo "bench/scale.sh: unknown size $1 (200k, 1m or 10m)" >&2; return 1 ;;
  esac
}

# await waits until a process started in the background prints $2 into $3.
await() {
  until grep -qs "$2" "$3"; do
    kill -0 "$1" 2>/dev/null || { cat "$3"; echo "bench/scale.sh: $1 exited before it said '$2'" >&2; exit 1; }
    sleep 0.02
  done
}

rss_mib() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

"$usher" bench floor --addr "$floor_addr" >"$out/floor.out" 2>&1 &
floor_pid=$!
pids+=("$floor_pid")
await "$floor_pid" 'serving grpc.health.v1' "$out/floor.out"

rows=()
for size in "${sizes[@]}"; do
  read -r -a flags <<<"$(shape "$size")"
  data=$dir/scale-$size.db
  rm -f "$data"
  echo "== $size: usher bench populate ${flags[*]}"
  "$usher" bench populate --data "$data" "${flags[@]}" | tee "$out/$size-populate.out"
  file_mib=$(( $(stat -c %s "$data") / 1048576 ))
  echo "== $size: usher bench inprocess"
  "$usher" bench inprocess --data "$data" --save-queries "$out/$size-queries.json" --json "$out/$size-inprocess.json" |
    tee "$out/$size-inprocess.out"
  echo "== $size: usher serve"
  start=$(date +%s%N)
  "$usher" serve --addr "$addr" --data "$data" >"$out/$size-serve.out" 2>&1 &
  pid=$!
  pids+=("$pid")
  await "$pid" 'serving gRPC' "$out/$size-serve.out"
  startup_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  rss_start=$(rss_mib "$pid")
  sleep 2
  rss_settled=$(rss_mib "$pid")
  echo "start-up: $startup_ms ms to serving; resident memory $rss_start MiB at once, $rss_settled MiB 2 s later"
  echo "== $size: usher bench check"
  "$usher" bench check --addr "$addr" --server-pid "$pid" --floor "$floor_addr" --floor-pid "$floor_pid" \
    --queries "$out/$size-queries.json" --health=false --concurrency 8,32 --duration "$duration" \
    --json "$out/$size-check.json" | tee "$out/$size-check.out"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -f "$data"
  rows+=("$(jq -r --arg size "$size" --arg file "$file_mib" --arg startup "$startup_ms" --arg rss "$rss_settled" \
    --slurpfile c "$out/$size-check.json" '
    def usher($n): $c[0].runs[] | select(.concurrency == $n) | .phases[] | select(.name == "usher check");
    def peak: [$c[0].runs[].phases[] | select(.server == "usher") | .rss_peak_bytes] | max / 1048576 | floor;
    "| \($size) | \(.grants) | \($file) MiB | \(.load_s * 100 | round / 100) s | \(($startup | tonumber) / 10 | round / 100) s | \($rss) MiB | \(peak) MiB | \(.checks[0].ns_per_check | round) ns | \(.checks[1].ns_per_check | round) ns | \(usher(8).throughput_ratio * 100 | round / 100) / \(usher(8).p99_ratio * 100 | round / 100) | \(usher(32).throughput_ratio * 100 | round / 100) / \(usher(32).p99_ratio * 100 | round / 100) | \($c[0].machine.load_start[0]) to \($c[0].machine.load_max_1m) |"
    ' "$out/$size-inprocess.json")")
done

echo
echo "| grants | in the file | file size | index built in process | start-up to serving | RSS after start-up | RSS peak under load | Check in process, 30,000 queries | Check in process, 1,024 queries | gRPC Check / floor at 8: throughput / p99 | at 32 | load average (1 min), start to peak |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
