#!/usr/bin/env bash
# Runs the task-layer benchmarks with repetitions and prints the summary table (the median CPU
# time of each benchmark and the goals: packaged_task / karx headline >= 3x, karx Async
# spawn+run+join / baseline <= 1x, the other karx spawn+run+joins / baseline <= 2x). The table
# is printed by karx_task_bench itself (a custom reporter), so this needs nothing but bash.
#
#   bench/summarize.sh [path/to/karx_task_bench] [more --benchmark_* flags]
#
# Without a path it looks in build/release and build/h-bench. KARX_BENCH_JSON=file also saves the
# full results as JSON (Google Benchmark's --benchmark_out). Repetitions are interleaved at
# random so that a burst of load from elsewhere spreads over all benchmarks instead of one.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

bin=""
if [[ $# -gt 0 && "$1" != --* ]]; then
  bin="$1"
  shift
else
  for candidate in "$root/build/release/bench/karx_task_bench" "$root/build/h-bench/bench/karx_task_bench"; do
    if [[ -x "$candidate" ]]; then
      bin="$candidate"
      break
    fi
  done
fi
if [[ -z "$bin" || ! -x "$bin" ]]; then
  echo "summarize.sh: karx_task_bench not found; build it first:" >&2
  echo "  cmake --preset release && cmake --build build/release --target karx_task_bench" >&2
  echo "or pass its path as the first argument." >&2
  exit 2
fi

flags=(--benchmark_repetitions="${KARX_BENCH_REPETITIONS:-5}"
       --benchmark_report_aggregates_only=true
       --benchmark_enable_random_interleaving=true)
if [[ -n "${KARX_BENCH_JSON:-}" ]]; then
  flags+=(--benchmark_out="$KARX_BENCH_JSON" --benchmark_out_format=json)
fi

exec "$bin" "${flags[@]}" "$@"
