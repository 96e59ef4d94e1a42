package main

import (
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	batchSize     = 100000                 // trivial goroutines per batch
	numBlockers   = 4                      // goroutines stuck in a blocking syscall
	blockerCalls  = 10                     // syscalls per blocker
	blockerSleep  = 100 * time.Millisecond // per syscall
	stallMinGap   = time.Millisecond       // gaps longer than this add to stall_ms
	msPerDuration = float64(time.Millisecond)
)

type blockingLine struct {
	Kind           string  `json:"kind"`
	Library        string  `json:"library"`
	Variant        string  `json:"variant"`
	Threads        int     `json:"threads"`
	MaxGapMs       float64 `json:"max_gap_ms"`
	StallMs        float64 `json:"stall_ms"`
	BatchQuietMs   float64 `json:"batch_quiet_ms"`
	BatchBlockedMs float64 `json:"batch_blocked_ms"`
	ThreadsStarted int     `json:"threads_started"`
	BlockedMs      float64 `json:"blocked_ms"`
}

// batch spawns batchSize goroutines that each bump a counter and waits for all of them.
func batch() time.Duration {
	var counter atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(batchSize)
	for i := 0; i < batchSize; i++ {
		go func() {
			counter.Add(1)
			wg.Done()
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// blockIn sleeps in nanosleep(2) itself, so the thread really blocks in the kernel and the
// runtime has to hand its P to another thread; time.Sleep would only park the goroutine.
func blockIn(d time.Duration) {
	req := syscall.NsecToTimespec(d.Nanoseconds())
	for {
		var rem syscall.Timespec
		err := syscall.Nanosleep(&req, &rem)
		if err != syscall.EINTR {
			return
		}
		req = rem // interrupted by a signal: sleep the rest
	}
}

// A ticker is a goroutine that yields in a loop and times the gaps between its turns: a gap is
// how long runnable work waited for a P.
type ticker struct {
	tracking atomic.Bool // gaps count only while set
	stop     atomic.Bool
	done     chan struct{}
	maxGap   time.Duration // read after done is closed
	stall    time.Duration
}

func startTicker() *ticker {
	t := &ticker{done: make(chan struct{})}
	go t.run()
	return t
}

func (t *ticker) run() {
	defer close(t.done)
	last := time.Now()
	lastTracked := false
	for !t.stop.Load() {
		runtime.Gosched()
		now := time.Now()
		tracked := t.tracking.Load()
		// Only a gap whose both ends fall in the tracked window counts.
		if tracked && lastTracked {
			gap := now.Sub(last)
			if gap > t.maxGap {
				t.maxGap = gap
			}
			if gap > stallMinGap {
				t.stall += gap
			}
		}
		last, lastTracked = now, tracked
	}
}

func runBlocking(cfg config) {
	// Unmeasured batch first, so that the quiet batch does not pay for growing the goroutine
	// free lists and the heap while the blocked one would not.
	batch()
	runtime.GC()
	quiet := batch()

	runtime.GC()
	tick := startTicker()
	var blockers sync.WaitGroup
	blockers.Add(numBlockers)
	start := time.Now()
	for i := 0; i < numBlockers; i++ {
		go func() {
			defer blockers.Done()
			for j := 0; j < blockerCalls; j++ {
				blockIn(blockerSleep)
			}
		}()
	}
	tick.tracking.Store(true)
	blocked := batch()
	blockers.Wait()
	blockedFor := time.Since(start)
	tick.tracking.Store(false)
	tick.stop.Store(true)
	<-tick.done

	emit(blockingLine{
		Kind:           "blocking",
		Library:        library,
		Variant:        "syscall.Nanosleep",
		Threads:        cfg.threads,
		MaxGapMs:       round3(float64(tick.maxGap) / msPerDuration),
		StallMs:        round3(float64(tick.stall) / msPerDuration),
		BatchQuietMs:   round3(float64(quiet) / msPerDuration),
		BatchBlockedMs: round3(float64(blocked) / msPerDuration),
		ThreadsStarted: pprof.Lookup("threadcreate").Count(),
		BlockedMs:      round3(float64(blockedFor) / msPerDuration),
	})
}
