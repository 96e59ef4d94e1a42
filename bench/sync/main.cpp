// The karx.sync benchmark's entry point; the workloads register themselves, one file per
// library.
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
