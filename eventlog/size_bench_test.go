package eventlog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

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
