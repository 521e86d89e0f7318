package eventlogtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/delegations/delegations/eventlog"
)

// appendReadReopen: appends are numbered from 1 without gaps, each
// stream's version counts its records, and the records, streams and
// sequence survive a reopen.
func appendReadReopen(t *testing.T, b Backend) {
	l := b.Log
	for _, step := range []struct {
		a    eventlog.Append
		want eventlog.Result
	}{
		{eventlog.Append{Stream: "a", Entries: []eventlog.Entry{Entry(1, "one"), Entry(2, "two")}}, eventlog.Result{First: 1, Last: 2, Version: 2}},
		{eventlog.Append{Stream: "b", Key: "kb", Entries: []eventlog.Entry{Entry(3, "")}}, eventlog.Result{First: 3, Last: 3, Version: 1}},
		{eventlog.Append{Stream: "a", CheckVersion: true, Version: 2, Entries: []eventlog.Entry{Entry(4, "four")}}, eventlog.Result{First: 4, Last: 4, Version: 3}},
	} {
		if res := MustAppend(t, l, step.a); res != step.want {
			t.Fatalf("append to %s = %+v, want %+v", step.a.Stream, res, step.want)
		}
	}
	want := []eventlog.Record{
		{Seq: 1, Kind: 1, Stream: "a", Time: T0, Payload: []byte("one")},
		{Seq: 2, Kind: 2, Stream: "a", Time: T0, Payload: []byte("two")},
		{Seq: 3, Kind: 3, Stream: "b", Key: "kb", Time: T0},
		{Seq: 4, Kind: 4, Stream: "a", Time: T0, Payload: []byte("four")},
	}
	check := func(when string, l Log) {
		t.Helper()
		if l.Last() != 4 {
			t.Fatalf("%s: Last = %d, want 4", when, l.Last())
		}
		got := Collect(t, l, 0)
		if len(got) != len(want) {
			t.Fatalf("%s: %d records, want %d", when, len(got), len(want))
		}
		for i := range got {
			if !sameRecord(got[i], want[i]) {
				t.Fatalf("%s: record %d = %+v, want %+v", when, i+1, got[i], want[i])
			}
		}
		if tail := Collect(t, l, 3); len(tail) != 2 || tail[0].Seq != 3 {
			t.Fatalf("%s: Records(3) = %+v", when, tail)
		}
		if past := Collect(t, l, 5); len(past) != 0 {
			t.Fatalf("%s: Records(5) = %+v, want none", when, past)
		}
		a, err := l.Stream("a")
		if err != nil || len(a) != 3 || a[0].Seq != 1 || a[1].Seq != 2 || a[2].Seq != 4 || !sameRecord(a[2], want[3]) {
			t.Fatalf("%s: Stream(a) = %+v, %v", when, a, err)
		}
		if s, err := l.Stream("missing"); err != nil || len(s) != 0 {
			t.Fatalf("%s: Stream(missing) = %v, %v", when, s, err)
		}
		if _, err := l.Stream("a\x00b"); !errors.Is(err, eventlog.ErrInvalid) {
			t.Fatalf("%s: Stream of an id with a NUL = %v, want ErrInvalid", when, err)
		}
		verify(t, l)
	}
	check("before reopening", l)
	l = reopen(t, b)
	check("after reopening", l)
	// The sequence and the versions go on where they were.
	res := MustAppend(t, l, eventlog.Append{Stream: "a", CheckVersion: true, Version: 3, Entries: []eventlog.Entry{Entry(1, "")}})
	if res != (eventlog.Result{First: 5, Last: 5, Version: 4}) {
		t.Fatalf("append after reopening = %+v, want record 5, version 4", res)
	}
}

// recordsAcrossPages: Records yields every record from any starting point,
// across the backend's read pages, and stops when the caller does.
func recordsAcrossPages(t *testing.T, b Backend) {
	l := b.Log
	n := 2*b.PageLen + 17
	per := min(b.MaxEntries, 100)
	for appended := 0; appended < n; {
		k := min(per, n-appended)
		entries := make([]eventlog.Entry, k)
		for i := range entries {
			entries[i] = Entry(1, fmt.Sprint(appended+i+1))
		}
		MustAppend(t, l, eventlog.Append{Stream: fmt.Sprint("s", appended%3), Entries: entries})
		appended += k
	}
	page := uint64(b.PageLen)
	for _, from := range []uint64{0, 1, 2, page - 1, page, page + 1, 2 * page, 2*page + 1, uint64(n), uint64(n) + 1} {
		recs := Collect(t, l, from)
		start := max(from, 1)
		if want := n - int(start) + 1; len(recs) != max(want, 0) {
			t.Fatalf("Records(%d): %d records, want %d", from, len(recs), max(want, 0))
		}
		for i, r := range recs {
			if seq := start + uint64(i); r.Seq != seq || string(r.Payload) != fmt.Sprint(seq) {
				t.Fatalf("Records(%d)[%d] = seq %d payload %q, want seq %d", from, i, r.Seq, r.Payload, seq)
			}
		}
	}
	// Stopping early, on a page's last record too: an iterator that went
	// on yielding would panic (the range-over-func check).
	for _, stop := range []int{1, b.PageLen} {
		count := 0
		for _, err := range l.Records(1) {
			if err != nil {
				t.Fatal(err)
			}
			if count++; count == stop {
				break
			}
		}
	}
}

// largePayloads: payloads of every size up to eventlog.MaxPayloadLen,
// alone and several to an append, read back byte for byte by Records and
// Stream, before and after a reopen; a duplicate of such an append writes
// nothing.
func largePayloads(t *testing.T, b Backend) {
	l := b.Log
	sizes := [][]int{
		{eventlog.MaxPayloadLen},
		{3<<20 + 7},
		{600 << 10, 600 << 10, 10},
		{0, 1, eventlog.InlineLen, eventlog.InlineLen + 1},
		{eventlog.ChunkLen, eventlog.ChunkLen + 1, 2*eventlog.ChunkLen + 3},
		{1 << 20},
	}
	var want [][]byte
	var stream0 [][]byte
	for i, group := range sizes {
		var entries []eventlog.Entry
		for j, n := range group {
			p := Pattern(n, byte(i*16+j))
			want = append(want, p)
			if i%2 == 0 {
				stream0 = append(stream0, p)
			}
			entries = append(entries, eventlog.Entry{Kind: 7, Time: T0, Payload: p})
		}
		MustAppend(t, l, eventlog.Append{Stream: fmt.Sprint("big", i%2), Key: fmt.Sprint("big-", i), Entries: entries})
	}
	check := func(when string, l Log) {
		t.Helper()
		recs := Collect(t, l, 0)
		if len(recs) != len(want) {
			t.Fatalf("%s: %d records, want %d", when, len(recs), len(want))
		}
		for i, r := range recs {
			if !bytes.Equal(r.Payload, want[i]) || r.Kind != 7 {
				t.Fatalf("%s: record %d: %d bytes read back, %d written, equal %v", when, r.Seq, len(r.Payload), len(want[i]), bytes.Equal(r.Payload, want[i]))
			}
		}
		s, err := l.Stream("big0")
		if err != nil || len(s) != len(stream0) {
			t.Fatalf("%s: Stream(big0): %d records, %v", when, len(s), err)
		}
		for i, r := range s {
			if !bytes.Equal(r.Payload, stream0[i]) {
				t.Fatalf("%s: Stream(big0) record %d: %d bytes read back, %d written", when, r.Seq, len(r.Payload), len(stream0[i]))
			}
		}
		verify(t, l)
	}
	check("before reopening", l)
	last := l.Last()
	res := MustAppend(t, l, eventlog.Append{Stream: "big1", Key: "big-1", Entries: []eventlog.Entry{{Kind: 7, Time: T0, Payload: want[1]}}})
	if !res.Duplicate || res.First != 2 || res.Last != 2 || l.Last() != last {
		t.Fatalf("duplicate of a large append = %+v, Last %d; want record 2 again, Last %d", res, l.Last(), last)
	}
	check("after reopening", reopen(t, b))
}

// idempotencyKey: an append whose key was seen before writes nothing and
// returns the first append's records, with the version now of the stream
// it names; the keys survive a reopen, and of concurrent appends with one
// key exactly one writes.
func idempotencyKey(t *testing.T, b Backend) {
	l := b.Log
	MustAppend(t, l, eventlog.Append{Stream: "x", Entries: []eventlog.Entry{Entry(1, "")}})
	a := eventlog.Append{Stream: "s", Key: "k1", Entries: []eventlog.Entry{Entry(1, "a"), Entry(2, "b")}}
	if res := MustAppend(t, l, a); res != (eventlog.Result{First: 2, Last: 3, Version: 2}) {
		t.Fatalf("first append with key k1 = %+v", res)
	}
	// A retry, even with other content and to another stream, writes nothing.
	retry := MustAppend(t, l, eventlog.Append{Stream: "other", Key: "k1", Entries: []eventlog.Entry{Entry(9, "zzz")}})
	if want := (eventlog.Result{First: 2, Last: 3, Version: 0, Duplicate: true}); retry != want {
		t.Fatalf("retry on another stream = %+v, want %+v", retry, want)
	}
	MustAppend(t, l, eventlog.Append{Stream: "s", Entries: []eventlog.Entry{Entry(1, "c")}})
	retry = MustAppend(t, l, a)
	if want := (eventlog.Result{First: 2, Last: 3, Version: 3, Duplicate: true}); retry != want {
		t.Fatalf("retry after the stream grew = %+v, want %+v", retry, want)
	}
	if l.Last() != 4 || len(Collect(t, l, 0)) != 4 {
		t.Fatalf("retries wrote: Last = %d", l.Last())
	}
	if s, err := l.Stream("other"); err != nil || len(s) != 0 {
		t.Fatalf("a retry wrote to its stream: %+v, %v", s, err)
	}

	l = reopen(t, b)
	if again := MustAppend(t, l, a); again != (eventlog.Result{First: 2, Last: 3, Version: 3, Duplicate: true}) {
		t.Fatalf("retry after reopening = %+v", again)
	}
	recs := Collect(t, l, 2)
	if len(recs) != 3 || recs[0].Key != "k1" || recs[1].Key != "k1" || recs[2].Key != "" {
		t.Fatalf("records after the first = %+v, want two carrying key k1 and one none", recs)
	}

	// Concurrently: one append writes, every other gets its result.
	const n = 32
	results := make([]eventlog.Result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := l.Append(context.Background(), eventlog.Append{Stream: fmt.Sprint("c", i), Key: "k2", Entries: []eventlog.Entry{Entry(2, fmt.Sprint(i))}})
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		})
	}
	wg.Wait()
	writes := 0
	for i, res := range results {
		if !res.Duplicate {
			writes++
		}
		if res.First != 5 || res.Last != 5 {
			t.Fatalf("concurrent append %d with one key answered %+v, want record 5", i, res)
		}
	}
	if writes != 1 || l.Last() != 5 {
		t.Fatalf("%d of %d appends with one key wrote (Last %d), want 1", writes, n, l.Last())
	}
	verify(t, l)
}

// expectedVersion: an append expecting another version than its stream's
// is a *ConflictError naming both, writes nothing and keeps no key; of
// concurrent appends expecting one version exactly one is written.
func expectedVersion(t *testing.T, b Backend) {
	l := b.Log
	MustAppend(t, l, eventlog.Append{Stream: "s", CheckVersion: true, Version: 0, Entries: []eventlog.Entry{Entry(1, "")}})
	conflict := func(expected, actual uint64) {
		t.Helper()
		last := l.Last()
		_, err := l.Append(context.Background(), eventlog.Append{Stream: "s", Key: "kc", CheckVersion: true, Version: expected, Entries: []eventlog.Entry{Entry(1, "")}})
		var ce *eventlog.ConflictError
		if !errors.As(err, &ce) || !errors.Is(err, eventlog.ErrConflict) {
			t.Fatalf("append to s expecting version %d: err = %v, want a ConflictError", expected, err)
		}
		if *ce != (eventlog.ConflictError{Stream: "s", Expected: expected, Actual: actual}) {
			t.Fatalf("ConflictError = %+v, want stream s, expected %d, actual %d", *ce, expected, actual)
		}
		if l.Last() != last || len(Collect(t, l, 0)) != int(last) {
			t.Fatalf("a conflicting append wrote: Last = %d, was %d", l.Last(), last)
		}
	}
	conflict(0, 1)
	conflict(2, 1)
	// The conflicts kept no key: a retry at the right version writes.
	res := MustAppend(t, l, eventlog.Append{Stream: "s", Key: "kc", CheckVersion: true, Version: 1, Entries: []eventlog.Entry{Entry(2, "")}})
	if res != (eventlog.Result{First: 2, Last: 2, Version: 2}) {
		t.Fatalf("append at the right version = %+v", res)
	}
	// Streams sharing a prefix keep their own versions.
	res = MustAppend(t, l, eventlog.Append{Stream: "s2", CheckVersion: true, Version: 0, Entries: []eventlog.Entry{Entry(1, "")}})
	if res.Version != 1 {
		t.Fatalf("stream s2 version = %d, want 1", res.Version)
	}

	// Appends expecting the same version, at once: one wins.
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = l.Append(context.Background(), eventlog.Append{Stream: "s", CheckVersion: true, Version: 2, Entries: []eventlog.Entry{Entry(3, fmt.Sprint(i))}})
		})
	}
	wg.Wait()
	wins := 0
	for i, err := range errs {
		var ce *eventlog.ConflictError
		switch {
		case err == nil:
			wins++
		case errors.As(err, &ce) && ce.Actual == 3:
		default:
			t.Fatalf("append %d expecting version 2: %v, want success or a conflict at version 3", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d appends expecting version 2 won, want 1", wins)
	}
	if s, err := l.Stream("s"); err != nil || len(s) != 3 {
		t.Fatalf("Stream(s): %d records, %v", len(s), err)
	}
}

// badInput: an append the log cannot take is refused with ErrInvalid and
// a message naming what is wrong, and nothing of it is written; the
// largest append the backend allows is taken.
func badInput(t *testing.T, b Backend) {
	l := b.Log
	ok := []eventlog.Entry{Entry(1, "")}
	entries := func(n int) []eventlog.Entry {
		e := make([]eventlog.Entry, n)
		for i := range e {
			e[i] = Entry(1, fmt.Sprint(i))
		}
		return e
	}
	for _, c := range []struct {
		name, says string
		a          eventlog.Append
	}{
		{"empty stream", "empty stream id", eventlog.Append{Stream: "", Entries: ok}},
		{"NUL in stream", "NUL", eventlog.Append{Stream: "a\x00b", Entries: ok}},
		{"invalid UTF-8", "UTF-8", eventlog.Append{Stream: "a\xffb", Entries: ok}},
		{"long stream", "stream id is 256 bytes", eventlog.Append{Stream: strings.Repeat("s", eventlog.MaxStreamLen+1), Entries: ok}},
		{"long key", "idempotency key is 256 bytes", eventlog.Append{Stream: "s", Key: strings.Repeat("k", eventlog.MaxKeyLen+1), Entries: ok}},
		{"no entries", "entries, got 0", eventlog.Append{Stream: "s"}},
		{"too many entries", fmt.Sprintf("%d entries", b.MaxEntries), eventlog.Append{Stream: "s", Entries: entries(b.MaxEntries + 1)}},
		{"more than any log takes", fmt.Sprintf("%d entries", eventlog.MaxEntries), eventlog.Append{Stream: "s", Entries: entries(eventlog.MaxEntries + 1)}},
		{"huge payload", "payload is", eventlog.Append{Stream: "s", Entries: []eventlog.Entry{{Kind: 1, Time: T0, Payload: make([]byte, eventlog.MaxPayloadLen+1)}}}},
		{"zero time", "has no time", eventlog.Append{Stream: "s", Entries: []eventlog.Entry{Entry(1, ""), {Kind: 1}}}},
	} {
		_, err := l.Append(context.Background(), c.a)
		if !errors.Is(err, eventlog.ErrInvalid) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: err = %v, want ErrInvalid saying %q", c.name, err, c.says)
		}
	}
	if l.Last() != 0 || len(Collect(t, l, 0)) != 0 {
		t.Fatalf("refused appends wrote: Last = %d", l.Last())
	}
	res := MustAppend(t, l, eventlog.Append{Stream: "s", Key: "k", Entries: entries(b.MaxEntries)})
	if res != (eventlog.Result{First: 1, Last: uint64(b.MaxEntries), Version: uint64(b.MaxEntries)}) {
		t.Fatalf("append of %d entries = %+v", b.MaxEntries, res)
	}
}

// concurrentAppenders: appenders on many streams, each checking its
// stream's version: the log is one sequence without gaps, and every
// acknowledgement names the records that hold the appender's payload, at
// the version it was told, before and after a reopen.
func concurrentAppenders(t *testing.T, b Backend) {
	l := b.Log
	const writers, each = 32, 12
	acked := make([][]eventlog.Result, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			stream := fmt.Sprintf("w%02d", w)
			for i := range each {
				res, err := l.Append(context.Background(), eventlog.Append{
					Stream:       stream,
					CheckVersion: true,
					Version:      uint64(i),
					Entries:      []eventlog.Entry{Entry(1, fmt.Sprintf("%s/%d", stream, i))},
				})
				if err != nil {
					t.Errorf("%s append %d: %v", stream, i, err)
					return
				}
				acked[w] = append(acked[w], res)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	check := func(when string, l Log) {
		t.Helper()
		recs := Collect(t, l, 0)
		if len(recs) != writers*each {
			t.Fatalf("%s: the log holds %d records, want %d", when, len(recs), writers*each)
		}
		CheckContiguous(t, recs)
		for w, results := range acked {
			stream := fmt.Sprintf("w%02d", w)
			for i, res := range results {
				r := recs[res.First-1]
				if want := fmt.Sprintf("%s/%d", stream, i); res.Last != res.First || string(r.Payload) != want || r.Stream != stream {
					t.Fatalf("%s: acknowledged %+v holds %s %q, want %q", when, res, r.Stream, r.Payload, want)
				}
				if res.Version != uint64(i+1) {
					t.Fatalf("%s: %s append %d acknowledged version %d", when, stream, i, res.Version)
				}
			}
			s, err := l.Stream(stream)
			if err != nil || len(s) != each {
				t.Fatalf("%s: Stream(%s): %d records, %v", when, stream, len(s), err)
			}
			for i, r := range s {
				if r.Seq != results[i].First {
					t.Fatalf("%s: Stream(%s)[%d] is record %d, acknowledged as %d", when, stream, i, r.Seq, results[i].First)
				}
			}
		}
		verify(t, l)
	}
	check("before reopening", l)
	check("after reopening", reopen(t, b))
}

// concurrentAppendsToOneStream: appends to one stream at once, without
// expected versions, each get a version of their own, and the stream's
// version is their count.
func concurrentAppendsToOneStream(t *testing.T, b Backend) {
	l := b.Log
	const appenders = 64
	acked := make([]eventlog.Result, appenders)
	var wg sync.WaitGroup
	for w := range appenders {
		wg.Go(func() {
			res, err := l.Append(context.Background(), eventlog.Append{Stream: "s", Entries: []eventlog.Entry{Entry(1, fmt.Sprint(w))}})
			if err != nil {
				t.Errorf("append %d: %v", w, err)
			}
			acked[w] = res
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	s, err := l.Stream("s")
	if err != nil || len(s) != appenders {
		t.Fatalf("Stream(s): %d records, %v", len(s), err)
	}
	seen := map[uint64]bool{}
	for w, res := range acked {
		if res.Version < 1 || res.Version > appenders || seen[res.Version] {
			t.Fatalf("append %d acknowledged version %d (results %+v)", w, res.Version, acked)
		}
		seen[res.Version] = true
		// The stream's record at that version is the append's.
		if r := s[res.Version-1]; r.Seq != res.First || string(r.Payload) != fmt.Sprint(w) {
			t.Fatalf("append %d acknowledged as record %d, version %d; the stream holds record %d %q there", w, res.First, res.Version, r.Seq, r.Payload)
		}
	}
	res := MustAppend(t, l, eventlog.Append{Stream: "s", CheckVersion: true, Version: appenders, Entries: []eventlog.Entry{Entry(1, "last")}})
	if res.Version != appenders+1 {
		t.Fatalf("append at version %d = %+v", appenders, res)
	}
}

// wait: Wait returns once the log holds a record after the one named,
// written by this log or by another writer, at once if it already does,
// and with ctx's error or ErrClosed; a closed log refuses appends.
func wait(t *testing.T, b Backend) {
	l, w := b.Log, b.Log
	if b.Writer != nil {
		w = b.Writer(t)
	}
	got := make(chan uint64)
	go func() {
		last, err := l.Wait(context.Background(), 0)
		if err != nil {
			t.Error(err)
		}
		got <- last
	}()
	MustAppend(t, w, eventlog.Append{Stream: "s", Entries: []eventlog.Entry{Entry(1, "")}})
	if last := <-got; last != 1 {
		t.Fatalf("Wait returned %d, want 1", last)
	}
	if last, err := l.Wait(context.Background(), 0); err != nil || last != 1 {
		t.Fatalf("Wait(0) with record 1 there = %d, %v", last, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Wait(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a cancelled ctx = %v", err)
	}
	closed := make(chan error)
	go func() {
		_, err := l.Wait(context.Background(), 1)
		closed <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; !errors.Is(err, eventlog.ErrClosed) {
		t.Fatalf("Wait across Close = %v, want ErrClosed", err)
	}
	if _, err := l.Append(context.Background(), eventlog.Append{Stream: "s", Entries: []eventlog.Entry{Entry(1, "")}}); !errors.Is(err, eventlog.ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
}

// cancelledAppend: an appender whose ctx ends either gets ctx's error and
// nothing is written, or the append is written and acknowledged; never
// both, never neither. The appends are cancelled in turn at once (most
// before the log takes them up), from their Ready (a plain log calls it
// once its writer holds the append, before the commit; a replica before
// it goes upstream), and once a writer of the log sees it grow (the append
// is decided, its appender may not have the answer yet; on a replica:
// committed upstream, perhaps not yet applied).
func cancelledAppend(t *testing.T, b Backend) {
	l, w := b.Log, b.Log
	if b.Writer != nil {
		w = b.Writer(t)
	}
	acked := 0
	for i := range 200 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		var res eventlog.Result
		var err error
		a := eventlog.Append{Stream: "s", Key: fmt.Sprint("k", i), Entries: []eventlog.Entry{Entry(1, fmt.Sprint(i))}}
		if i%3 == 1 {
			a.Ready = func() error { cancel(); return nil }
		}
		last := w.Last()
		go func() {
			res, err = l.Append(ctx, a)
			close(done)
		}()
		switch i % 3 {
		case 0:
			cancel()
		case 2:
			// Once the log grows, or the append ends without it.
			grown, stop := context.WithCancel(context.Background())
			go func() {
				defer stop()
				_, _ = w.Wait(grown, last)
			}()
			select {
			case <-grown.Done():
			case <-done:
			}
			stop()
			cancel()
		}
		<-done
		cancel()
		switch {
		case err == nil && res.Duplicate:
			t.Fatalf("append %d reported a duplicate", i)
		case err == nil:
			acked++
		case !errors.Is(err, context.Canceled):
			t.Fatalf("append %d: %v", i, err)
		}
	}
	// A barrier: every append taken up before it is decided before it.
	MustAppend(t, l, eventlog.Append{Stream: "barrier", Entries: []eventlog.Entry{Entry(1, "")}})
	if got := int(l.Last()) - 1; got != acked {
		t.Fatalf("the log holds %d appends, %d were acknowledged", got, acked)
	}
}
