package main

import (
	"runtime"
	"sync"
	"time"
)

// The workload sizes; they must match bench/runtime/workloads.hpp (modelled on tokio's
// benches/rt_multi_threaded.rs).
const (
	numSpawns = 10000 // spawn_many, spawn_many_inside
	numDepth  = 1000  // chained_spawn
	numRounds = 1000  // ping_pong
	numYields = 1000  // yield_many: per goroutine; 2 x threads goroutines
)

// An iteration runs the workload once and returns how many operations it did.
type iteration func(threads int) int

type throughputLine struct {
	Kind     string    `json:"kind"`
	Workload string    `json:"workload"`
	Threads  int       `json:"threads"`
	Library  string    `json:"library"`
	Unit     string    `json:"unit"`
	NsPerOp  []float64 `json:"ns_per_op"`
}

func throughputRunner(name, unit string, it iteration) func(config) {
	return func(cfg config) {
		// The first sample warms the scheduler, the goroutine free lists and the heap; it is
		// discarded.
		sample(cfg, it)
		ns := make([]float64, 0, cfg.reps)
		for r := 0; r < cfg.reps; r++ {
			ns = append(ns, round3(sample(cfg, it)))
		}
		emit(throughputLine{"throughput", name, cfg.threads, library, unit, ns})
	}
}

// sample runs whole iterations until minTime has passed (at least one) and returns the mean
// ns per operation. Like testing.B, it starts from a collected heap so that one sample does not
// pay for the garbage of the previous one; collections during the sample are counted.
func sample(cfg config, it iteration) float64 {
	runtime.GC()
	ops := 0
	start := time.Now()
	var elapsed time.Duration
	for {
		ops += it(cfg.threads)
		if elapsed = time.Since(start); elapsed >= cfg.minTime {
			break
		}
	}
	return float64(elapsed.Nanoseconds()) / float64(ops)
}

// spawnMany: main spawns numSpawns goroutines; the WaitGroup is the shared countdown.
func spawnMany(int) int {
	var wg sync.WaitGroup
	wg.Add(numSpawns)
	for i := 0; i < numSpawns; i++ {
		go func() { wg.Done() }()
	}
	wg.Wait()
	return numSpawns
}

// spawnManyInside: the same spawns, issued from a goroutine rather than from main, so they go
// through a P's local run queue.
func spawnManyInside(int) int {
	var wg sync.WaitGroup
	wg.Add(numSpawns)
	go func() {
		for i := 0; i < numSpawns; i++ {
			go func() { wg.Done() }()
		}
	}()
	wg.Wait()
	return numSpawns
}

// chain spawns the next link until depth reaches zero; the last link wakes main.
func chain(depth int, done chan<- struct{}) {
	if depth == 0 {
		close(done)
		return
	}
	go chain(depth-1, done)
}

func chainedSpawn(int) int {
	done := make(chan struct{})
	go chain(numDepth, done)
	<-done
	return numDepth
}

// pingPong: every round is goroutine A spawning B; B answers through a one-shot channel, and A
// counts the round down once it has the answer.
func pingPong(int) int {
	var wg sync.WaitGroup
	wg.Add(numRounds)
	for i := 0; i < numRounds; i++ {
		go func() {
			answer := make(chan int, 1) // capacity 1: B never blocks on the send
			go func() { answer <- 1 }()
			<-answer
			wg.Done()
		}()
	}
	wg.Wait()
	return numRounds
}

// yieldMany: 2 x threads goroutines, so every P has more than one runnable goroutine and a
// Gosched really switches.
func yieldMany(threads int) int {
	n := 2 * threads
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			for j := 0; j < numYields; j++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	return n * numYields
}
