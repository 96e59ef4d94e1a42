// Command karx-go-peer runs one of the karx runtime benchmark workloads with goroutines and
// prints the result as JSON lines on stdout, so that bench/run_all can put Go beside the C++
// libraries. One workload per invocation: the runner interleaves it with the C++ binaries.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// library is the name every JSON line carries.
const library = "go"

// A workload runs with GOMAXPROCS already set; it prints its own lines.
type workload struct {
	defaultThreads int
	run            func(cfg config)
}

type config struct {
	threads int
	reps    int
	minTime time.Duration
}

var workloads = map[string]workload{
	"spawn_many":        {1, throughputRunner("spawn_many", "ns/task", spawnMany)},
	"spawn_many_inside": {1, throughputRunner("spawn_many_inside", "ns/task", spawnManyInside)},
	"chained_spawn":     {1, throughputRunner("chained_spawn", "ns/spawn", chainedSpawn)},
	"ping_pong":         {1, throughputRunner("ping_pong", "ns/round", pingPong)},
	"yield_many":        {1, throughputRunner("yield_many", "ns/yield", yieldMany)},
	"fib":               {1, throughputRunner("fib", "ns/task", fibWorkload)},
	"skynet":            {1, throughputRunner("skynet", "ns/task", skynetWorkload)},
	"channel_1to1":      {1, throughputRunner("channel_1to1", "ns/message", channelShape(1, 1))},
	"channel_4to4":      {1, throughputRunner("channel_4to4", "ns/message", channelShape(4, 4))},
	"mutex_uncontended": {1, throughputRunner("mutex_uncontended", "ns/lock", mutexLockers(1))},
	"mutex_contended":   {2, throughputRunner("mutex_contended", "ns/lock", mutexLockers(contendedLockers))},
	"fib_memory":        {2, forkJoinMemory("fib", fibWorkload)},
	"skynet_memory":     {2, forkJoinMemory("skynet", skynetWorkload)},
	"blocking":          {2, runBlocking},
	"idle":              {2, runIdle},
	"memory":            {2, runMemory},
}

// workloadOrder lists the workloads for the usage text in a stable order.
var workloadOrder = []string{
	"spawn_many", "spawn_many_inside", "chained_spawn", "ping_pong", "yield_many", "fib", "skynet",
	"channel_1to1", "channel_4to4", "mutex_uncontended", "mutex_contended",
	"blocking", "idle", "memory", "fib_memory", "skynet_memory",
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: karx-go-peer <workload> [-threads N] [-reps R] [-min-time SECONDS]\n")
	fmt.Fprintf(w, "workloads: %s\n", strings.Join(workloadOrder, ", "))
	fmt.Fprintf(w, "  -threads N         GOMAXPROCS (default 1; 2 for mutex_contended, blocking, idle, memory, fib_memory, skynet_memory)\n")
	fmt.Fprintf(w, "  -reps R            samples per throughput workload (default 15)\n")
	fmt.Fprintf(w, "  -min-time SECONDS  minimum time per sample (default 0.2)\n")
	fmt.Fprintf(w, "or:    karx-go-peer echo_server [-threads N] [-host H] [-port P] [-until-stdin-closes]\n")
	fmt.Fprintf(w, "  the karx.net benchmarks' echo server (GOMAXPROCS N, default 2; port 0: any free port)\n")
}

// fail reports a bad command line and exits with status 2.
func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "karx-go-peer: "+format+"\n", args...)
	usage(os.Stderr)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		fail("missing workload")
	}
	name := os.Args[1]
	if name == "-h" || name == "-help" || name == "--help" {
		usage(os.Stdout)
		return
	}
	if name == "echo_server" { // a server, not a measurement: its own flags (echo_server.go)
		runEchoServer(os.Args[2:])
		return
	}
	w, ok := workloads[name]
	if !ok {
		fail("unknown workload %q", name)
	}

	fs := flag.NewFlagSet("karx-go-peer", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // fail() prints the message and the usage itself
	threads := fs.Int("threads", w.defaultThreads, "GOMAXPROCS")
	reps := fs.Int("reps", 15, "samples")
	minTime := fs.Float64("min-time", 0.2, "seconds per sample")
	if err := fs.Parse(os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(os.Stdout)
			return
		}
		fail("%v", err)
	}
	switch {
	case fs.NArg() > 0:
		fail("unexpected argument %q", fs.Arg(0))
	case *threads < 1:
		fail("-threads must be at least 1, got %d", *threads)
	case *reps < 1:
		fail("-reps must be at least 1, got %d", *reps)
	case !(*minTime > 0) || *minTime > 3600:
		fail("-min-time must be in (0, 3600] seconds, got %v", *minTime)
	}

	runtime.GOMAXPROCS(*threads)
	w.run(config{
		threads: *threads,
		reps:    *reps,
		minTime: time.Duration(*minTime * float64(time.Second)),
	})
}

// emit prints v as one JSON line on stdout.
func emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "karx-go-peer: %v\n", err)
		os.Exit(1)
	}
	b = append(b, '\n')
	if _, err := os.Stdout.Write(b); err != nil {
		fmt.Fprintf(os.Stderr, "karx-go-peer: writing stdout: %v\n", err)
		os.Exit(1)
	}
}

// round3 keeps three decimals: more would be noise, and the lines stay readable.
func round3(x float64) float64 {
	if x < 0 {
		return -round3(-x)
	}
	return float64(int64(x*1000+0.5)) / 1000
}
