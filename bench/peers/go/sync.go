package main

import (
	"sync"
)

// The karx.sync workloads; sizes and shapes as in bench/sync/sync_workloads.hpp.
const (
	numMessages      = 100000 // channel_*: messages per iteration, over all producers
	channelCapacity  = 64     // the bounded channel's capacity
	numLocks         = 10000  // mutex_*: lock/unlock pairs per goroutine
	contendedLockers = 4      // mutex_contended: goroutines incrementing one counter
)

// channelShape: producers goroutines send numMessages values in all into one buffered channel,
// consumers goroutines receive until it is closed and drained. The channel is closed once every
// producer is done (main waits for them, as idiomatic Go does); the sum of what the consumers
// received is checked.
func channelShape(producers, consumers int) iteration {
	return func(int) int {
		ch := make(chan uint64, channelCapacity)
		per := numMessages / producers
		sums := make(chan uint64, consumers)
		for c := 0; c < consumers; c++ {
			go func() {
				var sum uint64
				for v := range ch {
					sum += v
				}
				sums <- sum
			}()
		}
		var sent sync.WaitGroup
		sent.Add(producers)
		for p := 0; p < producers; p++ {
			go func() {
				for i := 0; i < per; i++ {
					ch <- uint64(i)
				}
				sent.Done()
			}()
		}
		sent.Wait()
		close(ch)
		var total uint64
		for c := 0; c < consumers; c++ {
			total += <-sums
		}
		if want := uint64(producers) * uint64(per) * uint64(per-1) / 2; total != want {
			panic("channel: the consumers' sum is wrong")
		}
		return producers * per
	}
}

// mutexLockers: lockers goroutines each take and release one sync.Mutex numLocks times around
// an increment of a shared counter; the counter is checked.
func mutexLockers(lockers int) iteration {
	return func(int) int {
		var mu sync.Mutex
		counter := 0
		var done sync.WaitGroup
		done.Add(lockers)
		for l := 0; l < lockers; l++ {
			go func() {
				for i := 0; i < numLocks; i++ {
					mu.Lock()
					counter++
					mu.Unlock()
				}
				done.Done()
			}()
		}
		done.Wait()
		if counter != lockers*numLocks {
			panic("mutex: the counter is wrong")
		}
		return lockers * numLocks
	}
}
