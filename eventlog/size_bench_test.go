package eventlog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkIndexFill: what the log's file holds for 100,000 records of
// 256-byte payloads appended by 64 appenders, each moving to a new stream
// every 8 records (a delegation's lifecycle, interleaved with the others,
// so the versions index gets keys in its middle). The baseline is the
// payload bytes.
//
// Metrics: file-bytes/payload-byte; versions-fill and events-fill (the
// share of their leaf pages' bytes in use); versions-bytes/record (the
// versions index's leaf pages, per record). ns/op is one whole build.
func BenchmarkIndexFill(b *testing.B) {
	const appenders, records, eventsPerStream = 64, 100_000, 8
	for b.Loop() {
		path := filepath.Join(b.TempDir(), "log.db")
		l, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		e := benchEntry()
		parallel(appenders, func(i int) {
			for n := range records / appenders {
				stream := fmt.Sprintf("appender-%d-delegation-%d", i, n/eventsPerStream)
				if _, err := l.Append(ctx, Append{Stream: stream, Entries: []Entry{e}}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		total := records / appenders * appenders
		var versions, events bolt.BucketStats
		pageSize := 0
		if err := l.db.View(func(tx *bolt.Tx) error {
			versions = tx.Bucket(bucketVersions).Stats()
			events = tx.Bucket(bucketEvents).Stats()
			pageSize = tx.DB().Info().PageSize
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		fill := func(s bolt.BucketStats) float64 {
			return float64(s.LeafInuse) / float64(s.LeafPageN*pageSize)
		}
		b.ReportMetric(float64(fi.Size())/float64(total*benchPayload), "file-bytes/payload-byte")
		b.ReportMetric(fill(versions), "versions-fill")
		b.ReportMetric(fill(events), "events-fill")
		b.ReportMetric(float64(versions.LeafPageN*pageSize)/float64(total), "versions-bytes/record")
	}
}

// BenchmarkLargePayload: what a large payload costs the log beside a plain
// file. Per iteration: one append of a 4 MiB payload, then 16 appends of
// 300 bytes to other streams; and the same 4 MiB written to a new file
// with one write and one fsync (the baseline, as an artifact is written).
//
// Metrics: us/append-4MiB, us/file-4MiB, append/file (the log's cost over
// the baseline's); KiB-written/append-4MiB and KiB-written/small-after
// (the pages the commits allocated, Log.Allocated, per append: the small
// appends after a large one must not write it again).
func BenchmarkLargePayload(b *testing.B) {
	dir := b.TempDir()
	l, err := Open(filepath.Join(dir, "log.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	big := make([]byte, 4<<20)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	small := Entry{Kind: 2, Time: time.Now(), Payload: make([]byte, 300)}
	var tLog, tFile time.Duration
	var wBig, wSmall int64
	for i := 0; b.Loop(); i++ {
		a0, t0 := l.Allocated(), time.Now()
		if _, err := l.Append(ctx, Append{Stream: fmt.Sprintf("big-%d", i), Entries: []Entry{{Kind: 1, Time: time.Now(), Payload: big}}}); err != nil {
			b.Fatal(err)
		}
		tLog += time.Since(t0)
		wBig += l.Allocated() - a0
		a0 = l.Allocated()
		for j := range 16 {
			if _, err := l.Append(ctx, Append{Stream: fmt.Sprintf("small-%d", j), Entries: []Entry{small}}); err != nil {
				b.Fatal(err)
			}
		}
		wSmall += l.Allocated() - a0
		t0 = time.Now()
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("file-%d", i)))
		if err == nil {
			_, err = f.Write(big)
		}
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			b.Fatal(err)
		}
		tFile += time.Since(t0)
	}
	n := float64(b.N)
	b.ReportMetric(float64(tLog.Microseconds())/n, "us/append-4MiB")
	b.ReportMetric(float64(tFile.Microseconds())/n, "us/file-4MiB")
	b.ReportMetric(float64(tLog)/float64(tFile), "append/file")
	b.ReportMetric(float64(wBig)/1024/n, "KiB-written/append-4MiB")
	b.ReportMetric(float64(wSmall)/1024/n/16, "KiB-written/small-after")
}
