// karx.net: TCP and UDP sockets whose operations are karx futures. Non-blocking sockets on the
// netpoller (impl/net/): the current runtime's when a socket is made inside a karx runtime,
// else the standalone reactor's, so they work under any executor. Errors throw
// std::system_error in the errno (generic) category; destroying a pending operation cancels
// it; sockets close on destruction.
export module karx.net;
export import :resolve;
export import :socket;
export import :tcp_stream;
export import :tcp_listener;
export import :udp_socket;
