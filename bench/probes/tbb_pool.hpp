// The oneTBB setup of every probe: a task_arena whose 2 threads are both worker threads.
#pragma once

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>

#include "probes.hpp"

namespace karx_probes {

struct TbbPool {
  // oneTBB starts at most max_allowed_parallelism - 1 workers (by default hardware threads - 1,
  // so only one on a 2-CPU machine, the main thread being expected to join): ask for kThreads.
  tbb::global_control workers{tbb::global_control::max_allowed_parallelism, kThreads + 1};
  // No slot reserved for an external thread: both go to the workers, which run what the main
  // thread enqueues (it measures; it does not join the arena).
  tbb::task_arena arena{kThreads, 0};
};

}  // namespace karx_probes
