// The Go side of the primer's benchmark (benches/may_primer.rs runs it with
// `go run` and puts its numbers next to may's in book/may_primer/benchmarks.md).
//
// It measures what the Rust side measures, the same way: a timing is the
// median of 25 samples, each a batch of iterations sized to take at least
// 10 ms, after a warm-up; memory is the growth of the process's resident and
// virtual size (from /proc/self/status) per parked goroutine; context
// switches are summed over the process's threads. Each result is one line,
// "<key> <value>": nanoseconds per iteration, bytes per task, or a count.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

const samples = 25
const minSample = 10 * time.Millisecond

// measure returns the median time per iteration of run(iters), which does
// iters iterations and returns how long they took.
func measure(run func(iters int) time.Duration) float64 {
	iters := 1
	for run(iters) < minSample {
		iters *= 2
	}
	perIter := make([]float64, samples)
	for i := range perIter {
		perIter[i] = float64(run(iters).Nanoseconds()) / float64(iters)
	}
	sort.Float64s(perIter)
	return perIter[samples/2]
}

// spawnJoin starts a goroutine and waits for it to finish, iters times.
func spawnJoin(iters int) time.Duration {
	start := time.Now()
	for i := 0; i < iters; i++ {
		done := make(chan struct{})
		go func() { close(done) }()
		<-done
	}
	return time.Since(start)
}

// roundTrip sends a value to an echoing goroutine and waits for the reply,
// iters times, over two unbuffered channels.
func roundTrip(iters int) time.Duration {
	ping, pong := make(chan int), make(chan int)
	go func() {
		for n := range ping {
			pong <- n
		}
	}()
	start := time.Now()
	for i := 0; i < iters; i++ {
		ping <- i
		<-pong
	}
	elapsed := time.Since(start)
	close(ping)
	return elapsed
}

// statusBytes reads a "VmRSS:" or "VmSize:" line of /proc/self/status.
func statusBytes(field string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		panic(err)
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		words := strings.Fields(scanner.Text())
		if len(words) >= 2 && words[0] == field+":" {
			kib, err := strconv.ParseFloat(words[1], 64)
			if err != nil {
				panic(err)
			}
			return kib * 1024
		}
	}
	panic("no " + field + " in /proc/self/status")
}

// parked starts n goroutines that each block receiving from a channel of
// their own, and returns once all have started; release() ends them.
func parked(n int) (release func()) {
	ready := make(chan struct{})
	gates := make([]chan struct{}, n)
	for i := range gates {
		gates[i] = make(chan struct{})
		go func(gate chan struct{}) {
			ready <- struct{}{}
			<-gate
		}(gates[i])
	}
	for i := 0; i < n; i++ {
		<-ready
	}
	return func() {
		for _, gate := range gates {
			gate <- struct{}{}
		}
	}
}

// contextSwitches sums the voluntary and involuntary context switches of
// every thread of the process, from /proc/self/task/*/status.
func contextSwitches() float64 {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		panic(err)
	}
	total := 0.0
	for _, task := range tasks {
		status, err := os.ReadFile("/proc/self/task/" + task.Name() + "/status")
		if err != nil {
			continue // the thread has exited
		}
		for _, line := range strings.Split(string(status), "\n") {
			words := strings.Fields(line)
			if len(words) == 2 && strings.HasSuffix(words[0], "ctxt_switches:") {
				n, err := strconv.ParseFloat(words[1], 64)
				if err != nil {
					panic(err)
				}
				total += n
			}
		}
	}
	return total
}

// memoryPerParked is the growth of resident and virtual size per goroutine
// when n more are parked (after a first batch, as the Rust side does to get
// past may's pool of ready-made coroutines).
func memoryPerParked(n int) (rss, virt float64) {
	first := parked(1000)
	runtime.GC()
	rss0, virt0 := statusBytes("VmRSS"), statusBytes("VmSize")
	more := parked(n)
	rss1, virt1 := statusBytes("VmRSS"), statusBytes("VmSize")
	more()
	first()
	return (rss1 - rss0) / float64(n), (virt1 - virt0) / float64(n)
}

func main() {
	fmt.Printf("go_version %s\n", strings.TrimPrefix(runtime.Version(), "go"))
	fmt.Printf("gomaxprocs %d\n", runtime.GOMAXPROCS(0))
	// Warm up the scheduler and the stack cache, as the Rust side does.
	measure(spawnJoin)
	fmt.Printf("spawn_join_in_task %.1f\n", measure(spawnJoin))
	fmt.Printf("round_trip %.1f\n", measure(roundTrip))
	rss, virt := memoryPerParked(10000)
	fmt.Printf("parked_rss %.0f\n", rss)
	fmt.Printf("parked_virtual %.0f\n", virt)
	const iters = 20000
	before := contextSwitches()
	spawnJoin(iters)
	fmt.Printf("switches_in_task %.3f\n", (contextSwitches()-before)/iters)
}
