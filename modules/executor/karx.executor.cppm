// karx.executor: the dynamic runtime (processors, workers, the monitor, the blocking pool) and
// block_on. Timers are karx.time and the simulation executor karx.sim, modules of their own.
export module karx.executor;
export import karx.task;
export import :options;
export import :runtime;
export import :core;
