package eventlog

// The durability benchmarks, each measured beside its baseline in the same
// run so that the reported ratio is meaningful on any machine:
//
//	go test ./eventlog -run '^$' -bench . -benchtime 2000x
//
// BenchmarkSingleAppender: one appender; ratio = eventlog ns/append divided
// by a bare bbolt Update (one Put, durable commit) per record. Target ≤ 1.3.
//
// BenchmarkConcurrentAppenders: 64 appenders, each appending to a new stream
// every 8 records as a delegation's lifecycle does; ratio = eventlog records/s
// divided by a plain-file group commit (append to a file, one fdatasync per
// batch). Target ≥ 0.33.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

const benchPayload = 256 // bytes, about one registered event

func benchEntry() Entry {
	return Entry{Kind: 1, Time: t0, Payload: make([]byte, benchPayload)}
}

func BenchmarkSingleAppender(b *testing.B) {
	dir := b.TempDir()
	l := openTest(b, filepath.Join(dir, "log.db"), Options{})
	bare, err := bolt.Open(filepath.Join(dir, "bare.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer bare.Close()
	if err := bare.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("events"))
		return err
	}); err != nil {
		b.Fatal(err)
	}

	ctx := context.Background()
	e := benchEntry()
	var logTime, bareTime time.Duration
	var seq uint64
	for b.Loop() {
		seq++
		stream := fmt.Sprintf("stream-%d", seq%64)
		// Alternate the two so that disk noise hits both alike.
		start := time.Now()
		if _, err := l.Append(ctx, Append{Stream: stream, Entries: []Entry{e}}); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if err := bare.Update(func(tx *bolt.Tx) error {
			val := appendRecord(nil, seq, e.Kind, e.Time.UnixNano(), stream, "", e.Payload)
			return tx.Bucket([]byte("events")).Put(u64(seq), val)
		}); err != nil {
			b.Fatal(err)
		}
		logTime += mid.Sub(start)
		bareTime += time.Since(mid)
	}
	n := float64(seq)
	b.ReportMetric(float64(logTime.Nanoseconds())/n, "eventlog-ns/append")
	b.ReportMetric(float64(bareTime.Nanoseconds())/n, "bbolt-ns/update")
	b.ReportMetric(float64(logTime)/float64(bareTime), "ratio(≤1.3)")
}

func BenchmarkConcurrentAppenders(b *testing.B) {
	const appenders, each, eventsPerStream = 64, 32, 8
	dir := b.TempDir()
	l := openTest(b, filepath.Join(dir, "log.db"), Options{})
	pf, err := openPlainFile(filepath.Join(dir, "plain.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer pf.close()

	ctx := context.Background()
	e := benchEntry()
	var logTime, plainTime time.Duration
	var total int
	appended := make([]int, appenders) // per appender, for stream names
	for b.Loop() {
		// One round: every appender appends `each` times to its own stream,
		// through the log and then through the baseline.
		logTime += parallel(appenders, func(i int) {
			for range each {
				// Like a delegation: a new stream every eventsPerStream appends.
				stream := fmt.Sprintf("appender-%d-delegation-%d", i, appended[i]/eventsPerStream)
				appended[i]++
				if _, err := l.Append(ctx, Append{Stream: stream, Entries: []Entry{e}}); err != nil {
					b.Error(err)
				}
			}
		})
		plainTime += parallel(appenders, func(i int) {
			for range each {
				if err := pf.append(appendRecord(nil, 0, e.Kind, e.Time.UnixNano(), fmt.Sprintf("stream-%d", i), "", e.Payload)); err != nil {
					b.Error(err)
				}
			}
		})
		total += appenders * each
	}
	logRate := float64(total) / logTime.Seconds()
	plainRate := float64(total) / plainTime.Seconds()
	b.ReportMetric(logRate, "eventlog-records/s")
	b.ReportMetric(plainRate, "plainfile-records/s")
	b.ReportMetric(logRate/plainRate, "ratio(≥0.33)")
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

// plainFile is the baseline: the cheapest durable group commit there is.
// Appenders hand records to one writer that writes everything queued with
// one write and one fdatasync, then acknowledges the whole batch.
type plainFile struct {
	f    *os.File
	reqs chan plainReq
	quit chan struct{}
	wg   sync.WaitGroup
}

type plainReq struct {
	rec  []byte
	done chan error
}

func openPlainFile(path string) (*plainFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	p := &plainFile{f: f, reqs: make(chan plainReq, 1024), quit: make(chan struct{})}
	p.wg.Go(p.writer)
	return p, nil
}

func (p *plainFile) append(rec []byte) error {
	done := make(chan error, 1)
	p.reqs <- plainReq{rec, done}
	return <-done
}

func (p *plainFile) writer() {
	var buf []byte
	var batch []plainReq
	for {
		select {
		case r := <-p.reqs:
			batch = append(batch[:0], r)
		case <-p.quit:
			return
		}
	drain:
		for {
			select {
			case r := <-p.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		buf = buf[:0]
		for _, r := range batch {
			buf = append(buf, r.rec...)
		}
		_, err := p.f.Write(buf)
		if err == nil {
			err = datasync(p.f)
		}
		for _, r := range batch {
			r.done <- err
		}
	}
}

func (p *plainFile) close() {
	close(p.quit)
	p.wg.Wait()
	p.f.Close()
}
