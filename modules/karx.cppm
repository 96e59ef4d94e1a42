// import karx; : the whole engine.
export module karx;
export import karx.waker;
export import karx.task;
export import karx.executor;
export import karx.time;
export import karx.sim;
export import karx.sync;
export import karx.net;
