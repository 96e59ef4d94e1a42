package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// The fork-join workloads; sizes and shapes as in bench/runtime/workloads.hpp.
const (
	fibN           = 30      // fib: each call with n >= 2 spawns fib(n-1), computes fib(n-2) itself
	skynetLeaves   = 1000000 // skynet: a 10-ary tree of goroutines over 10^6 leaves
	skynetChildren = 10
)

// fibSpawns is how many goroutines fib(n) starts: one per call with n >= 2.
func fibSpawns(n int) int {
	if n < 2 {
		return 0
	}
	return 1 + fibSpawns(n-1) + fibSpawns(n-2)
}

func fib(n int) uint64 {
	if n < 2 {
		return uint64(n)
	}
	ch := make(chan uint64, 1)
	go func() { ch <- fib(n - 1) }()
	b := fib(n - 2)
	return <-ch + b
}

func fibWorkload(int) int {
	if got, want := fib(fibN), uint64(832040); got != want {
		panic("fib(30) is wrong")
	}
	return fibSpawns(fibN)
}

func skynet(num, size int, out chan<- uint64) {
	if size == 1 {
		out <- uint64(num)
		return
	}
	ch := make(chan uint64, skynetChildren)
	step := size / skynetChildren
	for i := 0; i < skynetChildren; i++ {
		go skynet(num+i*step, step, ch)
	}
	var sum uint64
	for i := 0; i < skynetChildren; i++ {
		sum += <-ch
	}
	out <- sum
}

// skynetTasks counts every node of the tree (the root included).
func skynetTasks() int {
	n, level := 0, 1
	for level <= skynetLeaves {
		n += level
		level *= skynetChildren
	}
	return n
}

func skynetWorkload(int) int {
	out := make(chan uint64, 1)
	go skynet(0, skynetLeaves, out)
	if got, want := <-out, uint64(skynetLeaves)*(skynetLeaves-1)/2; got != want {
		panic("skynet's sum is wrong")
	}
	return skynetTasks()
}

type forkJoinMemoryLine struct {
	Kind         string  `json:"kind"`
	Library      string  `json:"library"`
	Workload     string  `json:"workload"`
	Threads      int     `json:"threads"`
	PeakGrowthMB float64 `json:"peak_growth_mb"`
	RSSBeforeMB  float64 `json:"rss_before_mb"`
	PeakRSSMB    float64 `json:"peak_rss_mb"`
}

// peakRSS is the process's high-water mark: VmHWM in /proc/self/status (not getrusage's
// Maxrss, which keeps the peak of the image the process exec'd from).
func peakRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		panic(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			fields := strings.Fields(line)
			kib, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				panic(err)
			}
			return kib * 1024
		}
	}
	panic("no VmHWM line in /proc/self/status")
}

// forkJoinMemory runs the workload once and reports the peak RSS it added, as the C++ probes
// (bench/probes/forkjoin.cpp) do for karx and oneTBB.
func forkJoinMemory(name string, run iteration) func(config) {
	return func(cfg config) {
		runtime.GC()
		debug.FreeOSMemory()
		before := rss()
		run(cfg.threads)
		peak := peakRSS()
		growth := peak - before
		if growth < 0 {
			growth = 0
		}
		const mb = 1024 * 1024
		emit(forkJoinMemoryLine{"forkjoin_memory", library, name, cfg.threads,
			round3(float64(growth) / mb), round3(float64(before) / mb), round3(float64(peak) / mb)})
	}
}
