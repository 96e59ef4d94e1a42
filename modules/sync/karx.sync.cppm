// karx.sync: channels, sync primitives, combinators, structured concurrency and cancellation.
// Every awaitable here is a karx Future that speaks only Wakers, so it works on any executor
// built on karx::spawn (the runtime, the simulation, a user's). Destroying a waiting future
// cancels its wait and loses nothing (docs/design.md, "karx.sync").
export module karx.sync;
export import karx.waker;
export import karx.task;
export import :channel;
export import :oneshot;
export import :mutex;
export import :semaphore;
export import :notify;
// Internal partitions (no public names): the lock and the intrusive wait list.
export import :lock;
export import :wait_list;
export import :fatal;
export import :ring;
export import :channel_core;
