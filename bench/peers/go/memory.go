package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"time"
)

const numParked = 1000000

type memoryLine struct {
	Kind         string  `json:"kind"`
	Library      string  `json:"library"`
	Tasks        int     `json:"tasks"`
	BytesPerTask float64 `json:"bytes_per_task"`
	RSSBeforeMB  float64 `json:"rss_before_mb"`
	RSSAfterMB   float64 `json:"rss_after_mb"`
}

// rss reads the resident set size from /proc/self/statm (its second field, in pages).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err == nil {
		if f := bytes.Fields(b); len(f) >= 2 {
			var pages int64
			if pages, err = strconv.ParseInt(string(f[1]), 10, 64); err == nil {
				return pages * int64(os.Getpagesize())
			}
		}
		err = fmt.Errorf("unexpected contents %q", b)
	}
	fmt.Fprintf(os.Stderr, "karx-go-peer: /proc/self/statm: %v\n", err)
	os.Exit(1)
	return 0
}

// runMemory measures the resident memory of a parked goroutine: each one waits on its own
// channel, which is counted in its cost.
func runMemory(config) {
	// The handles main keeps to wake the goroutines are the harness's, not the goroutines':
	// fault the slice in before the baseline (make leaves fresh pages untouched).
	chans := make([]chan struct{}, numParked)
	for i := range chans {
		chans[i] = nil
	}
	runtime.GC()
	debug.FreeOSMemory()
	before := rss()

	var started, finished sync.WaitGroup
	started.Add(numParked)
	finished.Add(numParked)
	for i := range chans {
		c := make(chan struct{})
		chans[i] = c
		go func() {
			started.Done()
			<-c
			finished.Done()
		}()
	}
	started.Wait()
	time.Sleep(100 * time.Millisecond) // the last ones to Done() still have to park
	after := rss()

	// Where the bytes went, for the curious; stderr keeps stdout to JSON lines.
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Fprintf(os.Stderr, "karx-go-peer: memory: stack in use %.1f B/goroutine, heap in use %.1f B/goroutine, %d GCs\n",
		float64(ms.StackInuse)/numParked, float64(ms.HeapInuse)/numParked, ms.NumGC)

	for _, c := range chans {
		close(c)
	}
	finished.Wait()

	const mib = 1 << 20
	emit(memoryLine{"memory", library, numParked,
		round3(float64(after-before) / numParked),
		round3(float64(before) / mib), round3(float64(after) / mib)})
}
