package etcdlog

// Benchmarks of the log on etcd, each beside eventlog's bbolt log measured
// in the same run (same machine, same disk), so that the ratio means
// something on any machine:
//
//	go test ./eventlog/etcdlog -run '^$' -bench . -benchtime 20x
//
// BenchmarkConcurrentAppenders: 64 appenders, each appending to a new
// stream every 8 records as a delegation's lifecycle does, to a one-member
// embedded etcd and to a bbolt file; records/s of each, ratio etcd/bbolt,
// and the 50th and 99th percentile latency of one append.
//
// BenchmarkSingleAppender: one appender, one record per append; the mean
// latency of each and the ratio etcd/bbolt.

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
)

const benchPayload = 256 // bytes, about one registered event

func benchEntry() eventlog.Entry {
	return eventlog.Entry{Kind: 1, Time: t0, Payload: make([]byte, benchPayload)}
}

// appender is what both logs offer.
type appender interface {
	Append(context.Context, eventlog.Append) (eventlog.Result, error)
}

func openBoth(b *testing.B) (etcd, bbolt appender) {
	c := startCluster(b, 1)
	el := open(b, c.Client(), Options{})
	bl, err := eventlog.Open(filepath.Join(b.TempDir(), "log.db"), eventlog.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bl.Close() })
	return el, bl
}

func BenchmarkConcurrentAppenders(b *testing.B) {
	const appenders, each, eventsPerStream = 64, 32, 8
	el, bl := openBoth(b)
	ctx := context.Background()
	e := benchEntry()
	type side struct {
		name      string
		log       appender
		wall      time.Duration
		latencies []time.Duration
		appended  []int // per appender, for stream names
	}
	sides := []*side{{name: "etcd", log: el}, {name: "bbolt", log: bl}}
	for _, s := range sides {
		s.appended = make([]int, appenders)
	}
	var total int
	var mu sync.Mutex
	for b.Loop() {
		// One round on each, alternately, so that noise hits both alike.
		for _, s := range sides {
			lat := make([][]time.Duration, appenders)
			s.wall += parallel(appenders, func(i int) {
				for range each {
					stream := fmt.Sprintf("appender-%d-delegation-%d", i, s.appended[i]/eventsPerStream)
					s.appended[i]++
					start := time.Now()
					if _, err := s.log.Append(ctx, eventlog.Append{Stream: stream, Entries: []eventlog.Entry{e}}); err != nil {
						b.Error(err)
					}
					lat[i] = append(lat[i], time.Since(start))
				}
			})
			mu.Lock()
			for _, l := range lat {
				s.latencies = append(s.latencies, l...)
			}
			mu.Unlock()
		}
		total += appenders * each
	}
	rate := map[string]float64{}
	for _, s := range sides {
		rate[s.name] = float64(total) / s.wall.Seconds()
		b.ReportMetric(rate[s.name], s.name+"-records/s")
		slices.Sort(s.latencies)
		b.ReportMetric(ms(percentile(s.latencies, 50)), s.name+"-p50-ms")
		b.ReportMetric(ms(percentile(s.latencies, 99)), s.name+"-p99-ms")
	}
	b.ReportMetric(rate["etcd"]/rate["bbolt"], "ratio")
}

func BenchmarkSingleAppender(b *testing.B) {
	el, bl := openBoth(b)
	ctx := context.Background()
	e := benchEntry()
	var etcdTime, bboltTime time.Duration
	var n int
	for b.Loop() {
		n++
		a := eventlog.Append{Stream: fmt.Sprintf("stream-%d", n%64), Entries: []eventlog.Entry{e}}
		start := time.Now()
		if _, err := el.Append(ctx, a); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if _, err := bl.Append(ctx, a); err != nil {
			b.Fatal(err)
		}
		etcdTime += mid.Sub(start)
		bboltTime += time.Since(mid)
	}
	b.ReportMetric(float64(etcdTime.Microseconds())/float64(n)/1000, "etcd-ms/append")
	b.ReportMetric(float64(bboltTime.Microseconds())/float64(n)/1000, "bbolt-ms/append")
	b.ReportMetric(float64(etcdTime)/float64(bboltTime), "ratio")
}

// parallel runs fn(0..n-1) in n goroutines and returns the wall time.
func parallel(n int, fn func(i int)) time.Duration {
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() { fn(i) })
	}
	wg.Wait()
	return time.Since(start)
}

// percentile returns the p-th percentile of sorted.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
