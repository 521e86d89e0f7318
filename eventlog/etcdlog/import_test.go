package etcdlog

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
)

// importSource writes a bbolt log with what an import must carry over:
// appends of one and of many entries (over the 124 one etcd transaction
// holds, and eventlog's limit of 1,024), with and without idempotency
// keys, interleaved streams, and payloads inline, over eventlog.InlineLen
// and over etcd's request size.
func importSource(t *testing.T) *eventlog.Log {
	t.Helper()
	src, err := eventlog.Open(filepath.Join(t.TempDir(), "src.db"), eventlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	app := func(stream, key string, payloads ...string) {
		a := eventlog.Append{Stream: stream, Key: key}
		for i, p := range payloads {
			e := entry(uint16(i%7+1), p)
			e.Time = t0.Add(time.Duration(len(a.Entries)) * time.Microsecond)
			a.Entries = append(a.Entries, e)
		}
		if _, err := src.Append(context.Background(), a); err != nil {
			t.Fatal(err)
		}
	}
	many := func(n int, f string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf(f, i)
		}
		return out
	}
	app("b", "", "b0")
	app("a", "key-a", many(300, "a%d")...)
	app("b", "", "b1")
	app("c", "key-c", strings.Repeat("large ", 600_000), strings.Repeat("x", 5000))
	app("b", "key-b", "b2", "b3")
	app("d", "key-d", many(eventlog.MaxEntries, "d%d")...)
	app("a", "key-a2", "a300", "a301")
	app("e", "", "")
	return src
}

// TestImport copies a bbolt log into etcd in two runs, the first
// interrupted after a few odd-sized batches, and checks that the result is
// the log an etcd Log reads and appends to as if it had written it: the
// same records, streams, versions, index and idempotency keys, and appends
// going on after them.
func TestImport(t *testing.T) {
	c := startCluster(t, 1)
	cli := c.Client()
	ctx := context.Background()
	src := importSource(t)
	total := src.Last()
	var recs []eventlog.Record
	for r, err := range src.Records(1) {
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	opts := Options{Prefix: "/imp/"}

	im, err := StartImport(ctx, cli, opts, total)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 7, 150, 3, 200} { // ends inside key-a's and key-d's appends
		if err := im.Write(ctx, recs[im.Next()-1:im.Next()-1+uint64(n)]); err != nil {
			t.Fatal(err)
		}
	}
	stopped := im.Next()
	if _, err := Open(ctx, cli, opts); err == nil || !strings.Contains(err.Error(), "NOT READY") {
		t.Fatalf("Open during an import: %v", err)
	}

	im, err = StartImport(ctx, cli, opts, total)
	if err != nil {
		t.Fatal(err)
	}
	if !im.Resumed() || im.Next() != stopped {
		t.Fatalf("resumed %v at %d, want at %d", im.Resumed(), im.Next(), stopped)
	}
	for im.Next() <= total {
		from := im.Next() - 1
		if err := im.Write(ctx, recs[from:min(from+333, total)]); err != nil {
			t.Fatal(err)
		}
	}
	var want IndexSum
	for _, r := range recs {
		want.Add(r)
	}
	if got, err := im.IndexSum(); err != nil || got.N != want.N || got.Sum != want.Sum {
		t.Fatalf("index sum %d/%016x (%v), want %d/%016x", got.N, got.Sum, err, want.N, want.Sum)
	}
	if err := im.Finish(ctx); err != nil {
		t.Fatal(err)
	}

	l := open(t, cli, opts)
	if l.Last() != total {
		t.Fatalf("Last %d, want %d", l.Last(), total)
	}
	got := collect(t, l, 1)
	if len(got) != len(recs) {
		t.Fatalf("%d records, want %d", len(got), len(recs))
	}
	for i := range recs {
		if a, b := recs[i], got[i]; a.Seq != b.Seq || a.Kind != b.Kind || a.Stream != b.Stream || !a.Time.Equal(b.Time) || a.Key != b.Key || string(a.Payload) != string(b.Payload) {
			t.Fatalf("record %d: %+v, want %+v", a.Seq, short(b), short(a))
		}
	}
	for _, s := range []string{"a", "b", "c", "d", "e"} {
		want, _ := src.Stream(s)
		got, err := l.Stream(s)
		if err != nil || len(got) != len(want) || got[len(got)-1].Seq != want[len(want)-1].Seq {
			t.Fatalf("stream %q: %d records (%v), want %d", s, len(got), err, len(want))
		}
	}
	heads := func(seq func(yield func(eventlog.StreamHead, error) bool)) []eventlog.StreamHead {
		var out []eventlog.StreamHead
		for h, err := range seq {
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, h)
		}
		return out
	}
	if a, b := heads(src.StreamHeads()), heads(l.StreamHeads()); !slices.Equal(a, b) {
		t.Fatalf("stream heads %v, want %v", b, a)
	}
	var srcKeys, dstKeys []eventlog.KeyEntry
	for k, err := range src.Keys() {
		if err != nil {
			t.Fatal(err)
		}
		srcKeys = append(srcKeys, k)
	}
	for k, err := range l.Keys() {
		if err != nil {
			t.Fatal(err)
		}
		dstKeys = append(dstKeys, k)
	}
	if !slices.Equal(srcKeys, dstKeys) || len(srcKeys) != 5 {
		t.Fatalf("keys %v, want %v", dstKeys, srcKeys)
	}

	// The log goes on: a retried append finds its first result, a new
	// one lands after the copy at the stream's version.
	dup := mustAppend(t, l, eventlog.Append{Stream: "d", Key: "key-d", Entries: []eventlog.Entry{entry(1, "again")}})
	if !dup.Duplicate || dup.Last-dup.First+1 != eventlog.MaxEntries {
		t.Fatalf("retried append: %+v", dup)
	}
	next := mustAppend(t, l, eventlog.Append{Stream: "a", CheckVersion: true, Version: 302, Entries: []eventlog.Entry{entry(1, "a302")}})
	if next.First != total+1 || next.Version != 303 {
		t.Fatalf("append after the import: %+v", next)
	}

	// The index sum sees an entry gone, and one of a stream P/s does not
	// name.
	whole, err := l.IndexSum()
	if err != nil || whole.N != total+1 {
		t.Fatalf("index sum after an append: %d records (%v), want %d", whole.N, err, total+1)
	}
	if _, err := cli.Delete(ctx, l.p.indexEntry("b", 0)); err != nil {
		t.Fatal(err)
	}
	if got, err := l.IndexSum(); err != nil || got.N != whole.N-1 || got.Sum == whole.Sum {
		t.Fatalf("index sum without an entry: %d/%016x (%v), want %d records", got.N, got.Sum, err, whole.N-1)
	}
	if _, err := cli.Put(ctx, l.p.indexEntry("zz", 0), "1 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.IndexSum(); !errors.Is(err, eventlog.ErrCorrupt) || !strings.Contains(err.Error(), "under the streams the log names") {
		t.Fatalf("index sum with a stray entry: %v", err)
	}

	if _, err := StartImport(ctx, cli, opts, total); !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), "etcdctl del --prefix /imp/") {
		t.Fatalf("an import into a log: %v", err)
	}
	if _, err := cli.Put(ctx, "/other/x/stray", "1"); err != nil {
		t.Fatal(err)
	}
	if _, err := StartImport(ctx, cli, Options{Prefix: "/other/"}, total); !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), "no log head") {
		t.Fatalf("an import into a prefix with a stray key: %v", err)
	}
}

func short(r eventlog.Record) eventlog.Record {
	if len(r.Payload) > 40 {
		r.Payload = r.Payload[:40]
	}
	return r
}
