package replay

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// benchEvents is the size of the large log BenchmarkReplay replays. The
// DESIGN target (a full replay of 1M events through the FSM at 1M events/s
// or more) is about this size; BenchmarkReplay/events=100000 is the cheap
// form for a quick run.
var benchEvents = flag.Int("replay.events", 1_000_000, "events in BenchmarkReplay's large log")

// benchHistory is one delegation's life: 9 events, from registration to read.
func benchHistory(id string, n int, at time.Time) []eventlog.Entry {
	parent := fmt.Sprintf("ses_parent%04d", n%1000)
	evs := []fsm.Event{
		{Kind: fsm.KindRegistered, ProjectID: "0123456789abcdef", RootSessionID: fmt.Sprintf("ses_root%03d", n%100),
			ParentSessionID: parent, Agent: "researcher", Prompt: fmt.Sprintf("task %d: find the flaky test", n), Timeout: fsm.DefaultTimeout},
		{Kind: fsm.KindStarted, SessionID: fmt.Sprintf("ses_child%07d", n)},
		{Kind: fsm.KindProgressed, Message: "reading the test"},
		{Kind: fsm.KindProgressed, Message: "bisecting"},
		{Kind: fsm.KindProgressed, Message: "found it"},
		{Kind: fsm.KindCompleted, Result: fmt.Sprintf("result %d: TestLock races on a port", n), Title: "TestLock races", Description: "TestLock races on a port"},
		{Kind: fsm.KindPersisted, ArtifactPath: "0123456789abcdef/ses_root/" + id + ".md", ArtifactSize: 300, ArtifactHash: uint64(n) * 0x9E3779B97F4A7C15},
		{Kind: fsm.KindNotified, NotificationID: projection.TerminalNotificationID(id)},
		{Kind: fsm.KindRead},
	}
	out := make([]eventlog.Entry, len(evs))
	for i := range evs {
		at = at.Add(time.Second)
		out[i] = eventlog.Entry{Kind: uint16(evs[i].Kind), Time: at, Payload: evs[i].MarshalPayload()}
	}
	return out
}

// buildBenchLog writes a log of about events records: delegations of 9
// events each, appended by many goroutines so that group commit packs
// thousands of records into each commit.
func buildBenchLog(b *testing.B, path string, events int) int {
	b.Helper()
	l, err := eventlog.Open(path, eventlog.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	gen := fsm.NewIDGenerator(nil)
	n := events / 9
	ids := make([]string, n)
	seen := make(map[string]bool, n)
	for i := range ids {
		for {
			id := gen.Next()
			if !seen[id] {
				seen[id] = true
				ids[i] = id
				break
			}
		}
	}
	const workers = 64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				a := eventlog.Append{Stream: ids[i], Entries: benchHistory(ids[i], i, t0.Add(time.Duration(i)*time.Millisecond))}
				if _, err := l.Append(context.Background(), a); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return int(l.Last())
}

// bareScan walks the records with a bbolt cursor, no decoding: the floor
// under any replay. The eventlog's bucket of records is "events".
func bareScan(b *testing.B, path string) (records int, d time.Duration) {
	b.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	var sum uint64
	err = db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte("events")).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			sum += binary.BigEndian.Uint64(k) + uint64(len(v))
			records++
		}
		return nil
	})
	d = time.Since(start)
	if err != nil || sum == 0 {
		b.Fatal(err)
	}
	return records, d
}

// BenchmarkReplay replays a whole log through the FSM (read and verify
// each record, decode its payload, fold it with fsm.Evolve, keep the
// views' and the outbox's bookkeeping), beside a bare cursor scan of the
// same file measured in the same run. It reports events/s for both and
// their ratio. The large size is the -replay.events flag (1M by default).
// Skipped with -short: building the large log takes a while.
func BenchmarkReplay(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a large log; run without -short")
	}
	sizes := []int{100_000}
	if *benchEvents != sizes[0] {
		sizes = append(sizes, *benchEvents)
	}
	for _, size := range sizes {
		b.Run(fmt.Sprintf("events=%d", size), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), projection.LogFile)
			events := buildBenchLog(b, path, size)

			// The baseline: the fastest of a few warm bare scans.
			var scan time.Duration
			for i := range 3 {
				n, d := bareScan(b, path)
				if n != events {
					b.Fatalf("bare scan saw %d records, the log holds %d", n, events)
				}
				if i == 0 || d < scan {
					scan = d
				}
			}

			l, err := eventlog.Open(path, eventlog.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			b.ReportAllocs()
			for b.Loop() {
				st := newState()
				rb, err := newRebuild(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				sc := scanner{ctx: context.Background(), log: l, opts: &Options{}, st: st, rb: rb}
				if err := sc.scan(1); err != nil {
					b.Fatal(err)
				}
				rb.wait()
				rb.close()
				if st.applied != uint64(events) || len(sc.corrupt) != 0 || len(st.bad) != 0 {
					b.Fatalf("replayed %d of %d events, %d corrupt, %d undecodable", st.applied, events, len(sc.corrupt), len(st.bad))
				}
			}
			perSec := float64(events) * float64(b.N) / b.Elapsed().Seconds()
			scanPerSec := float64(events) / scan.Seconds()
			b.ReportMetric(perSec, "events/s")
			b.ReportMetric(scanPerSec, "scan-events/s")
			b.ReportMetric(perSec/scanPerSec, "replay/scan")
			b.ReportMetric(0, "ns/op")
		})
	}
}
