// karx.executor: the dynamic runtime (processors, workers, the monitor), timers, block_on.
export module karx.executor;
export import karx.task;
export import :timer;
export import :options;
export import :runtime;
export import :sim;
export import :core;
