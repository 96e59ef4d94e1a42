// karx.machinery: the runtime's internal building blocks (run queues, the injector and its
// spin lock, the parker). Not part of the public `karx` module; imported by karx.executor and by the tests.
export module karx.machinery;
export import :run_queue;
export import :spin_lock;
export import :injector;
export import :parker;
