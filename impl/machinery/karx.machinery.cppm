// karx.machinery: the runtime's internal building blocks (run queues, the injector, the
// parker, asymmetric fences, the poll word, the grow-only array). Not part of the public `karx` module; imported by
// karx.executor and by the tests.
export module karx.machinery;
export import :run_queue;
export import :injector;
export import :parker;
export import :asymmetric_fence;
export import :poll_word;
export import :grow_only_array;
