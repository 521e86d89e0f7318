package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/delegations/delegations/replay"
)

// TestScanPastBatches: on a log of several of the scan's batches (each read
// transaction ends when the batch is full, the next one resumes after it),
// a Progress callback changes nothing in the report and is last called
// with the whole log done; a run of missing records past the first
// batches is one damaged run, stepped over to the end of the log; and a
// replay until a sequence number stops there.
func TestScanPastBatches(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, c)
	populate(t, s, c, 120)
	last := s.Log().Last()
	if last < 600 {
		t.Fatalf("the log holds %d records, want several batches", last)
	}
	plain, err := replay.Run(ctx, s.Log(), dir, replay.Options{Now: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	var calls, done, total int
	withProgress, err := replay.Run(ctx, s.Log(), dir, replay.Options{Now: c.Now(), Progress: func(d, t int) { calls, done, total = calls+1, d, t }})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(plain)
	b, _ := json.Marshal(withProgress)
	if !bytes.Equal(a, b) {
		t.Errorf("the report with a Progress callback differs:\n%s\nwithout:\n%s", b, a)
	}
	if calls == 0 || done != int(last) || total != int(last) {
		t.Errorf("Progress called %d times, last with %d of %d, want %d of %d", calls, done, total, last, last)
	}
	if plain.Events != last || plain.Through != last {
		t.Errorf("replayed %d events through %d, want %d", plain.Events, plain.Through, last)
	}
	s.Close()

	l := withoutRecords(t, dir, 520, 522)
	rep, err := replay.Run(ctx, l, dir, replay.Options{Now: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	var runs []string
	for _, f := range rep.Findings {
		if f.Code == replay.CodeCorruptRecord {
			runs = append(runs, fmt.Sprint(f.Seqs))
		}
	}
	if fmt.Sprint(runs) != "[[520 521 522]]" || rep.Events != last-3 || rep.Through != last {
		t.Errorf("damaged runs %v, %d events through %d; want [[520 521 522]], %d through %d", runs, rep.Events, rep.Through, last-3, last)
	}
	until, err := replay.Run(ctx, l, dir, replay.Options{Now: c.Now(), Until: replay.Point{Seq: 400}})
	if err != nil {
		t.Fatal(err)
	}
	if until.Events != 400 || until.Through != 400 {
		t.Errorf("until 400: %d events through %d", until.Events, until.Through)
	}
}
