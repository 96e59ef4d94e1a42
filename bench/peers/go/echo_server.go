package main

// The Go echo server of the karx.net benchmarks (issue 15): a net.Listener on loopback, a
// goroutine per connection reading into one 64 KiB buffer and writing back what it read (the
// same shape and buffer size as the karx and Boost.Asio servers). Go's net package already
// sets TCP_NODELAY on every TCP connection and parks goroutines on its netpoller (epoll).
//
//	karx-go-peer echo_server [-threads N] [-host H] [-port P] [-until-stdin-closes]
//
// The loop is written out rather than io.Copy(conn, conn): io.Copy would go through
// TCPConn.ReadFrom, which splices socket to socket through a pipe (two system calls per chunk
// and no user-space buffer), a different server from the other two; every Go echo example
// writes this loop. Prints one JSON line once it listens:
//
//	{"kind":"listening","library":"go","port":P,"threads":N}
//
// and serves until killed (or, with -until-stdin-closes, until stdin reaches end of file).

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
)

const echoBufferSize = 64 * 1024

func runEchoServer(args []string) {
	fs := flag.NewFlagSet("karx-go-peer echo_server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	threads := fs.Int("threads", 2, "GOMAXPROCS")
	host := fs.String("host", "127.0.0.1", "address to listen on")
	port := fs.Int("port", 0, "port (0: any free port)")
	untilStdinCloses := fs.Bool("until-stdin-closes", false, "exit when stdin reaches end of file")
	if err := fs.Parse(args); err != nil {
		fail("echo_server: %v", err)
	}
	switch {
	case fs.NArg() > 0:
		fail("echo_server: unexpected argument %q", fs.Arg(0))
	case *threads < 1:
		fail("echo_server: -threads must be at least 1, got %d", *threads)
	case *port < 0 || *port > 65535:
		fail("echo_server: -port must be in 0..65535, got %d", *port)
	}
	runtime.GOMAXPROCS(*threads)

	ln, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "karx-go-peer: echo_server: %v\n", err)
		os.Exit(1)
	}
	emit(map[string]any{"kind": "listening", "library": library, "port": ln.Addr().(*net.TCPAddr).Port,
		"threads": *threads})
	if *untilStdinCloses {
		go func() {
			io.Copy(io.Discard, os.Stdin)
			os.Exit(0)
		}()
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			fmt.Fprintf(os.Stderr, "karx-go-peer: echo_server: accept: %v\n", err)
			os.Exit(1)
		}
		go echo(conn)
	}
}

func echo(conn net.Conn) {
	defer conn.Close()
	buf := make([]byte, echoBufferSize)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			if _, werr := conn.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // io.EOF: the client is done; anything else: drop the connection
		}
	}
}
