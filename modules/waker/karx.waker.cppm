// karx.waker: the poll protocol shared by every future, task and executor.
export module karx.waker;
export import :poll;
export import :waker;
export import :waker_fn;
export import :future;
