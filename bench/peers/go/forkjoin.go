package main

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
