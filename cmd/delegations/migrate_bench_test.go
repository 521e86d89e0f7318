package main

// BenchmarkMigrate measures delegations migrate each way on a store of
// -migrate.records records (100,000 by default), against a one-member
// embedded etcd, beside a baseline measured in the same run on the same
// etcd:
//
//	go test ./cmd/delegations -run '^$' -bench Migrate -benchtime 1x
//
// to-etcd-rec/s: migrate --to etcd (verify the source, copy, verify the
// copy record by record); baseline append-rec/s: the same records appended
// through etcdlog by 64 concurrent appenders, one record per append, as
// daemons write them (each stream's by one appender); to-ratio is the first over the second.
//
// from-etcd-rec/s: migrate --from etcd (copy into a new file, verify it,
// compare it record by record, build the views); baseline follow-rec/s: a
// daemon's replica on a new data directory catching up with the same etcd
// log (eventlog.Options.Upstream, views projected as it applies);
// from-ratio is the first over the second.

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/etcdlog"
	"github.com/delegations/delegations/eventlog/etcdlog/etcdtest"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

var migrateRecords = flag.Int("migrate.records", 100_000, "records in the store of BenchmarkMigrate")

// migrateBenchStore writes a store of about n records: delegations of 5
// events (registered, started, three progress notes), texts of 300 to
// 1,200 bytes and one prompt in 20 of 3,000 bytes (over eventlog.InlineLen),
// appended by 64 goroutines so that streams interleave as under a daemon,
// with the views projected.
func migrateBenchStore(b *testing.B, dir string, n int) {
	b.Helper()
	l, err := eventlog.Open(filepath.Join(dir, projection.LogFile), eventlog.Options{Projectors: []eventlog.Projector{projection.ViewsProjector()}})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	prose := strings.Repeat("Bisect the recent changes and report which commit made TestLock flaky, with the evidence. ", 40)
	gen := fsm.NewIDGenerator(nil)
	ids := map[string]bool{}
	var list []string
	for len(list) < n/5 {
		if id := gen.Next(); !ids[id] {
			ids[id] = true
			list = append(list, id)
		}
	}
	t0 := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	const workers = 64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(list); i += workers {
				prompt := prose[:1200]
				if i%20 == 0 {
					prompt = prose[:3000]
				}
				evs := []fsm.Event{
					{Kind: fsm.KindRegistered, Registration: fsm.Registration{ProjectID: "0123456789abcdef", RootSessionID: fmt.Sprintf("ses_root%03d", i%100),
						ParentSessionID: fmt.Sprintf("ses_parent%04d", i%1000), Agent: "researcher", Prompt: prompt, Timeout: fsm.DefaultTimeout}},
					{Kind: fsm.KindStarted, Registration: fsm.Registration{SessionID: fmt.Sprintf("ses_child%07d", i)}},
					{Kind: fsm.KindProgressed, Message: prose[:300]},
					{Kind: fsm.KindProgressed, Message: prose[1:301]},
					{Kind: fsm.KindProgressed, Message: prose[2:302]},
				}
				for j, e := range evs {
					e.ID, e.At = list[i], t0.Add(time.Duration(i*5+j)*time.Millisecond)
					a := eventlog.Append{Stream: list[i], Entries: []eventlog.Entry{{Kind: uint16(e.Kind), Time: e.At, Payload: e.MarshalPayload()}}}
					if j == 0 {
						a.Key = "register-" + list[i]
					}
					if _, err := l.Append(context.Background(), a); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

func BenchmarkMigrate(b *testing.B) {
	// Each side on an etcd member of its own, so that neither starts on
	// the other's 100,000 records.
	cl, appendCl := etcdtest.Start(b, 1).Client(), etcdtest.Start(b, 1).Client()
	ctx := context.Background()
	data := b.TempDir()
	migrateBenchStore(b, data, *migrateRecords)
	src, err := eventlog.Open(filepath.Join(data, projection.LogFile), eventlog.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	var recs []eventlog.Record
	for r, err := range src.Records(1) {
		if err != nil {
			b.Fatal(err)
		}
		recs = append(recs, r)
	}
	src.Close()
	n := float64(len(recs))

	for i := 0; b.Loop(); i++ {
		// Baseline: the records appended through etcdlog, one per append,
		// each stream's by one appender (as a daemon's per-delegation
		// lock does).
		appendLog, err := etcdlog.Open(ctx, appendCl, etcdlog.Options{Prefix: fmt.Sprintf("/append%d/", i)})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		var wg sync.WaitGroup
		const appenders = 64
		for w := range appenders {
			wg.Go(func() {
				for _, r := range recs {
					if xxhash.Sum64String(r.Stream)%appenders != uint64(w) {
						continue
					}
					if _, err := appendLog.Append(ctx, eventlog.Append{Stream: r.Stream, Entries: []eventlog.Entry{{Kind: r.Kind, Time: r.Time, Payload: r.Payload}}}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		appendTime := time.Since(start)
		appendLog.Close()

		prefix := fmt.Sprintf("/migrated%d/", i)
		m := &migration{cli: cl, opts: etcdlog.Options{Prefix: prefix}}
		start = time.Now()
		var to, from migrateReport
		if err := m.toEtcd(ctx, data, &to); err != nil {
			b.Fatal(err)
		}
		toTime := time.Since(start)

		// Baseline: a replica catching up on a new data directory.
		up, err := etcdlog.Open(ctx, cl, etcdlog.Options{Prefix: prefix})
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		replica, err := eventlog.Open(filepath.Join(b.TempDir(), projection.LogFile), eventlog.Options{Upstream: up, Projectors: []eventlog.Projector{projection.ViewsProjector()}})
		if err != nil {
			b.Fatal(err)
		}
		followTime := time.Since(start)
		if replica.Last() != uint64(len(recs)) {
			b.Fatalf("the replica holds %d records, want %d", replica.Last(), len(recs))
		}
		replica.Close()

		start = time.Now()
		if err := m.fromEtcd(ctx, b.TempDir(), &from); err != nil {
			b.Fatal(err)
		}
		fromTime := time.Since(start)

		b.ReportMetric(n/toTime.Seconds(), "to-etcd-rec/s")
		b.ReportMetric(n/appendTime.Seconds(), "append-rec/s")
		b.ReportMetric(appendTime.Seconds()/toTime.Seconds(), "to-ratio")
		b.ReportMetric(n/fromTime.Seconds(), "from-etcd-rec/s")
		b.ReportMetric(n/followTime.Seconds(), "follow-rec/s")
		b.ReportMetric(followTime.Seconds()/fromTime.Seconds(), "from-ratio")
		b.ReportMetric(to.CopySeconds/toTime.Seconds(), "to-copy-share")
		b.ReportMetric(from.CopySeconds/fromTime.Seconds(), "from-copy-share")
	}
	b.ReportMetric(n, "records")
}
