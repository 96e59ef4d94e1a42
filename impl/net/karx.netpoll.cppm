// karx.netpoll: the netpoller behind karx.net, internal (not re-exported by `karx`). The
// runtime (karx.executor) owns one Poller and waits in it when idle; karx.net's sockets
// register with the current runtime's Poller, or with the standalone reactor's outside a
// runtime. docs/design.md, "karx.net: the netpoller", has the whole protocol.
export module karx.netpoll;
export import :readiness;
export import :poller;
