package main

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

type idleLine struct {
	Kind      string  `json:"kind"`
	Library   string  `json:"library"`
	Threads   int     `json:"threads"`
	CPUMsPerS float64 `json:"cpu_ms_per_s"`
}

// cpuTime is the process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		fmt.Fprintf(os.Stderr, "karx-go-peer: getrusage: %v\n", err)
		os.Exit(1)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runIdle measures what an idle runtime costs: the CPU the process burns while main sleeps and
// nothing is runnable.
func runIdle(cfg config) {
	// Wake every P and leave spinning threads and free goroutines behind, as after real work.
	for round := 0; round < 4; round++ {
		var wg sync.WaitGroup
		wg.Add(1000)
		for i := 0; i < 1000; i++ {
			go func() { wg.Done() }()
		}
		wg.Wait()
	}
	time.Sleep(200 * time.Millisecond) // let the spinning threads park

	cpu0, wall0 := cpuTime(), time.Now()
	time.Sleep(2 * time.Second)
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)

	emit(idleLine{"idle", library, cfg.threads,
		round3(float64(cpu) / float64(time.Millisecond) / wall.Seconds())})
}
