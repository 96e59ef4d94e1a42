// karx.task: tasks for any scheduler (spawn, Task, JoinHandle) and the Async coroutine.
export module karx.task;
export import karx.waker;
export import :errors;
export import :task;
export import :join_handle;
export import :spawn;
export import :async;
export import :spawn_on;
export import :foreign_await;
// Internal partitions: exported as a module requires; they export no names but test hooks
// (docs/design.md, "Modules and files").
export import :state;
export import :header;
export import :outcome;
export import :alloc;
export import :slab;
export import :listing;
export import :coop;
export import :cell;
export import :chain;
export import :frame_block;
export import :async_cell;
export import :remote_cancel;
export import :awaitable_bridge;
