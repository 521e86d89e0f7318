package etcdlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestConcurrentAppenders: 64 appenders, each checking its stream's
// version; the log is one contiguous sequence and every acknowledgement
// names the record that holds the appender's payload.
func TestConcurrentAppenders(t *testing.T) {
	c := startCluster(t, 1)
	l := open(t, c.Client(), Options{})
	const writers, each = 64, 12
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
					Entries:      []eventlog.Entry{entry(1, fmt.Sprintf("%s/%d", stream, i))},
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
	recs := collect(t, l, 0)
	if len(recs) != writers*each {
		t.Fatalf("log holds %d records, want %d", len(recs), writers*each)
	}
	checkContiguous(t, recs)
	for w, results := range acked {
		stream := fmt.Sprintf("w%02d", w)
		for i, res := range results {
			r := recs[res.First-1]
			if want := fmt.Sprintf("%s/%d", stream, i); string(r.Payload) != want || r.Stream != stream {
				t.Fatalf("acknowledged seq %d holds %s %q, want %q", res.First, r.Stream, r.Payload, want)
			}
			if res.Version != uint64(i+1) {
				t.Fatalf("%s append %d acknowledged version %d", stream, i, res.Version)
			}
		}
		got, err := l.Stream(stream)
		if err != nil || len(got) != each {
			t.Fatalf("Stream(%s): %d records, %v", stream, len(got), err)
		}
	}
}

// TestConcurrentAppendsToOneStream: appends to one stream that share a
// batch put its version once (etcd refuses a transaction that puts a key
// twice), and each is acknowledged with its own version.
func TestConcurrentAppendsToOneStream(t *testing.T) {
	c := startCluster(t, 1)
	l := open(t, c.Client(), Options{})
	const appenders = 64
	versions := make([]uint64, appenders)
	var wg sync.WaitGroup
	for w := range appenders {
		wg.Go(func() {
			res, err := l.Append(context.Background(), eventlog.Append{
				Stream:  "s",
				Entries: []eventlog.Entry{entry(1, fmt.Sprintf("s/%d", w))},
			})
			if err != nil {
				t.Errorf("append %d: %v", w, err)
				return
			}
			versions[w] = res.Version
		})
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for w, v := range versions {
		if v < 1 || v > appenders || seen[v] {
			t.Fatalf("append %d acknowledged version %d (versions %v)", w, v, versions)
		}
		seen[v] = true
	}
	got, err := l.Stream("s")
	if err != nil || len(got) != appenders {
		t.Fatalf("Stream(s): %d records, %v", len(got), err)
	}
	res, err := l.Append(context.Background(), eventlog.Append{
		Stream: "s", CheckVersion: true, Version: appenders,
		Entries: []eventlog.Entry{entry(1, "s/last")},
	})
	if err != nil || res.Version != appenders+1 {
		t.Fatalf("append at version %d: %+v, %v", appenders, res, err)
	}
}

func TestIdempotencyKey(t *testing.T) {
	c := startCluster(t, 1)
	l := open(t, c.Client(), Options{})
	first := mustAppend(t, l, eventlog.Append{Stream: "s", Key: "k1", Entries: []eventlog.Entry{entry(1, "a"), entry(1, "b")}})
	mustAppend(t, l, eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, "c")}})
	// The same key on another stream: nothing written, the first result,
	// and that stream's version now.
	again := mustAppend(t, l, eventlog.Append{Stream: "t", Key: "k1", Entries: []eventlog.Entry{entry(1, "x")}})
	if want := (eventlog.Result{First: 1, Last: 2, Version: 0, Duplicate: true}); again != want {
		t.Fatalf("duplicate = %+v, want %+v", again, want)
	}
	again = mustAppend(t, l, eventlog.Append{Stream: "s", Key: "k1", Entries: []eventlog.Entry{entry(1, "x")}})
	if want := (eventlog.Result{First: first.First, Last: first.Last, Version: 3, Duplicate: true}); again != want {
		t.Fatalf("duplicate = %+v, want %+v", again, want)
	}
	if n := len(collect(t, l, 0)); n != 3 {
		t.Fatalf("log holds %d records after duplicates, want 3", n)
	}
	// Concurrently: one append writes, every other gets its result.
	const n = 32
	results := make([]eventlog.Result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := l.Append(context.Background(), eventlog.Append{Stream: fmt.Sprintf("c%d", i), Key: "k2", Entries: []eventlog.Entry{entry(2, "")}})
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		})
	}
	wg.Wait()
	writes := 0
	for _, res := range results {
		if !res.Duplicate {
			writes++
		}
		if res.First != 4 || res.Last != 4 {
			t.Fatalf("concurrent same-key append answered %+v, want seq 4", res)
		}
	}
	if writes != 1 {
		t.Fatalf("%d of %d same-key appends wrote, want 1", writes, n)
	}
	if recs := collect(t, l, 0); len(recs) != 4 || recs[3].Key != "k2" {
		t.Fatalf("log holds %d records after concurrent duplicates, want 4", len(recs))
	}
}

func TestExpectedVersion(t *testing.T) {
	c := startCluster(t, 1)
	l := open(t, c.Client(), Options{})
	mustAppend(t, l, eventlog.Append{Stream: "s", CheckVersion: true, Version: 0, Entries: []eventlog.Entry{entry(1, "")}})
	_, err := l.Append(context.Background(), eventlog.Append{Stream: "s", Key: "kc", CheckVersion: true, Version: 0, Entries: []eventlog.Entry{entry(1, "")}})
	var ce *eventlog.ConflictError
	if !errors.As(err, &ce) || ce.Expected != 0 || ce.Actual != 1 || ce.Stream != "s" || !errors.Is(err, eventlog.ErrConflict) {
		t.Fatalf("conflicting append: %v", err)
	}
	if l.Last() != 1 || len(collect(t, l, 0)) != 1 {
		t.Fatal("a conflicting append wrote records")
	}
	// Its key was not stored: a retry at the right version writes.
	res := mustAppend(t, l, eventlog.Append{Stream: "s", Key: "kc", CheckVersion: true, Version: 1, Entries: []eventlog.Entry{entry(1, "")}})
	if res != (eventlog.Result{First: 2, Last: 2, Version: 2}) {
		t.Fatalf("append at the right version: %+v", res)
	}
	// Two appends expecting the same version in one batch: one wins.
	var wg sync.WaitGroup
	var wins, conflicts sync.Map
	for i := range 16 {
		wg.Go(func() {
			_, err := l.Append(context.Background(), eventlog.Append{Stream: "s", CheckVersion: true, Version: 2, Entries: []eventlog.Entry{entry(1, "")}})
			switch {
			case err == nil:
				wins.Store(i, true)
			case errors.Is(err, eventlog.ErrConflict):
				conflicts.Store(i, true)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	n := 0
	wins.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Fatalf("%d appends expecting version 2 won, want 1", n)
	}
	if s, err := l.Stream("s"); err != nil || len(s) != 3 {
		t.Fatalf("Stream(s): %d records, %v", len(s), err)
	}
}

func TestAppendRejectsBadInput(t *testing.T) {
	c := startCluster(t, 1)
	l := open(t, c.Client(), Options{})
	ok := entry(1, "")
	many := make([]eventlog.Entry, 125)
	for i := range many {
		many[i] = ok
	}
	for _, a := range []eventlog.Append{
		{Stream: "", Entries: []eventlog.Entry{ok}},
		{Stream: strings.Repeat("s", eventlog.MaxStreamLen+1), Entries: []eventlog.Entry{ok}},
		{Stream: "a\x00b", Entries: []eventlog.Entry{ok}},
		{Stream: "s", Key: strings.Repeat("k", eventlog.MaxKeyLen+1), Entries: []eventlog.Entry{ok}},
		{Stream: "s"},
		{Stream: "s", Entries: many},
		{Stream: "s", Entries: []eventlog.Entry{{Kind: 1}}},
		{Stream: "s", Entries: []eventlog.Entry{{Kind: 1, Time: t0, Payload: make([]byte, eventlog.MaxPayloadLen+1)}}},
	} {
		if _, err := l.Append(context.Background(), a); !errors.Is(err, eventlog.ErrInvalid) {
			t.Errorf("Append(stream %.20q, %d entries) = %v, want ErrInvalid", a.Stream, len(a.Entries), err)
		}
	}
	// 124 entries fit one transaction.
	res := mustAppend(t, l, eventlog.Append{Stream: "s", Key: "k", Entries: many[:124]})
	if res.Last != 124 {
		t.Fatalf("124 entries: %+v", res)
	}
	if l.Last() != 124 {
		t.Fatalf("refused appends wrote: Last = %d", l.Last())
	}
	if _, err := l.Stream("a\x00b"); !errors.Is(err, eventlog.ErrInvalid) {
		t.Fatalf("Stream with a NUL = %v", err)
	}
}

// pattern returns n bytes that differ from position to position, so that a
// chunk out of place shows.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ byte(i>>11) ^ seed
	}
	return b
}

// TestChunkedPayloads: payloads up to MaxPayloadLen, alone and several to
// an append, read back byte for byte, by Records and Stream.
func TestChunkedPayloads(t *testing.T) {
	c := startCluster(t, 1)
	cli := c.Client()
	l := open(t, cli, Options{})
	sizes := [][]int{{eventlog.MaxPayloadLen}, {3<<20 + 7}, {600 << 10, 600 << 10, 10}, {0}, {1 << 20}}
	var want [][]byte
	for i, group := range sizes {
		var entries []eventlog.Entry
		for j, n := range group {
			p := pattern(n, byte(i*16+j))
			want = append(want, p)
			entries = append(entries, eventlog.Entry{Kind: 7, Time: t0, Payload: p})
		}
		mustAppend(t, l, eventlog.Append{Stream: fmt.Sprintf("big%d", i%2), Key: fmt.Sprintf("big-%d", i), Entries: entries})
	}
	recs := collect(t, l, 0)
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for i, r := range recs {
		if !bytes.Equal(r.Payload, want[i]) || r.Kind != 7 {
			t.Fatalf("record %d: %d bytes read back, %d written, equal %v", r.Seq, len(r.Payload), len(want[i]), bytes.Equal(r.Payload, want[i]))
		}
	}
	s, err := l.Stream("big0")
	if err != nil || len(s) != 5 || !bytes.Equal(s[0].Payload, want[0]) || !bytes.Equal(s[4].Payload, want[len(want)-1]) {
		t.Fatalf("Stream(big0): %d records, %v", len(s), err)
	}
	// A duplicate of a chunked append leaves no chunks behind.
	before := countChunks(t, cli)
	if res := mustAppend(t, l, eventlog.Append{Stream: "big1", Key: "big-1", Entries: []eventlog.Entry{{Kind: 7, Time: t0, Payload: want[1]}}}); !res.Duplicate {
		t.Fatalf("duplicate chunked append: %+v", res)
	}
	if after := countChunks(t, cli); after != before {
		t.Fatalf("a duplicate chunked append left %d chunks", after-before)
	}
}

func countChunks(t testing.TB, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/delegations/c/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// TestCorruptRecordAndChunk: a damaged record or chunk is a CorruptError
// naming its sequence number; the other records stay readable.
func TestCorruptRecordAndChunk(t *testing.T) {
	c := startCluster(t, 1)
	cli := c.Client()
	l := open(t, cli, Options{})
	for i := range 6 {
		mustAppend(t, l, eventlog.Append{Stream: fmt.Sprintf("s%d", i%2), Entries: []eventlog.Entry{entry(1, fmt.Sprint(i))}})
	}
	big := pattern(2<<20, 3)
	mustAppend(t, l, eventlog.Append{Stream: "big", Entries: []eventlog.Entry{{Kind: 1, Time: t0, Payload: big}}}) // 7
	mustAppend(t, l, eventlog.Append{Stream: "big", Entries: []eventlog.Entry{{Kind: 1, Time: t0, Payload: big}}}) // 8
	ctx := context.Background()
	raw, err := cli.Get(ctx, "/delegations/r/0000000000000003")
	if err != nil || len(raw.Kvs) != 1 {
		t.Fatal(err)
	}
	bad := bytes.Clone(raw.Kvs[0].Value)
	bad[len(bad)/2] ^= 0x40
	if _, err := cli.Put(ctx, "/delegations/r/0000000000000003", string(bad)); err != nil {
		t.Fatal(err)
	}
	wantCorrupt := func(err error, seq uint64) {
		t.Helper()
		var ce *eventlog.CorruptError
		if !errors.As(err, &ce) || ce.Seq != seq {
			t.Fatalf("got %v, want a CorruptError for record %d", err, seq)
		}
	}
	var got []uint64
	var last error
	for r, err := range l.Records(1) {
		if err != nil {
			last = err
			break
		}
		got = append(got, r.Seq)
	}
	wantCorrupt(last, 3)
	if len(got) != 2 {
		t.Fatalf("read %v before the damaged record", got)
	}
	if recs := collect(t, l, 4); len(recs) != 5 || recs[0].Seq != 4 {
		t.Fatalf("Records(4): %d records", len(recs))
	}
	_, err = l.Stream("s0") // records 1, 3, 5
	wantCorrupt(err, 3)
	if s, err := l.Stream("s1"); err != nil || len(s) != 3 {
		t.Fatalf("Stream(s1): %d records, %v", len(s), err)
	}
	// A damaged index entry: the stream cannot be read, the log can.
	for _, bad := range []string{"junk", "2 100000", "1 1"} {
		if _, err := cli.Put(ctx, "/delegations/x/s1\x000000000000000000", bad); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Stream("s1"); !errors.Is(err, eventlog.ErrCorrupt) {
			t.Fatalf("Stream(s1) with index entry %q: %v, want a CorruptError", bad, err)
		}
	}
	if recs := collect(t, l, 4); len(recs) != 5 {
		t.Fatalf("Records(4) after index damage: %d records", len(recs))
	}
	// A damaged chunk of record 7, a missing chunk of record 8.
	chunks, err := cli.Get(ctx, "/delegations/c/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil || len(chunks.Kvs) < 4 {
		t.Fatalf("chunks: %v, %d", err, len(chunks.Kvs))
	}
	var ids []string
	for _, kv := range chunks.Kvs {
		id := string(kv.Key[:len("/delegations/c/0000000000000000/")])
		if len(ids) == 0 || ids[len(ids)-1] != id {
			ids = append(ids, id)
		}
	}
	if len(ids) != 2 {
		t.Fatalf("%d chunked payloads stored, want 2", len(ids))
	}
	// Which id belongs to which record is for the records to say: damage
	// both ways and find both errors.
	if _, err := cli.Put(ctx, ids[0]+"00000001", "short"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, ids[1]+"00000000"); err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{7, 8} {
		var err error
		for _, e := range l.Records(seq) {
			err = e
			break
		}
		wantCorrupt(err, seq)
	}
	got, last = nil, nil
	for r, err := range l.Records(4) {
		if err != nil {
			last = err
			break
		}
		got = append(got, r.Seq)
	}
	wantCorrupt(last, 7)
	if len(got) != 3 {
		t.Fatalf("read %v before the damaged chunk", got)
	}
}

func TestRecordsFromTheMiddle(t *testing.T) {
	c := startCluster(t, 1)
	l := open(t, c.Client(), Options{})
	const n = 2*pageLen + 17
	entries := make([]eventlog.Entry, 100)
	for i := range entries {
		entries[i] = entry(1, "")
	}
	for appended := 0; appended < n; {
		k := min(100, n-appended)
		mustAppend(t, l, eventlog.Append{Stream: fmt.Sprintf("s%d", appended), Entries: entries[:k]})
		appended += k
	}
	for _, from := range []uint64{0, 1, pageLen, pageLen + 1, n, n + 1} {
		recs := collect(t, l, from)
		start := max(from, 1)
		if want := int(n - start + 1); len(recs) != want {
			t.Fatalf("Records(%d): %d records, want %d", from, len(recs), want)
		}
		for i, r := range recs {
			if r.Seq != start+uint64(i) {
				t.Fatalf("Records(%d)[%d] has seq %d", from, i, r.Seq)
			}
		}
	}
	// Stopping early stops.
	count := 0
	for range l.Records(1) {
		if count++; count == 3 {
			break
		}
	}
	if count != 3 {
		t.Fatal(count)
	}
}

// TestWaitAndTail: Wait and Tail are woken by another writer's commit.
func TestWaitAndTail(t *testing.T) {
	c := startCluster(t, 1)
	a := open(t, c.Client(), Options{})
	b := open(t, c.Client(), Options{})
	got := make(chan uint64)
	go func() {
		last, err := a.Wait(context.Background(), 0)
		if err != nil {
			t.Error(err)
		}
		got <- last
	}()
	mustAppend(t, b, eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, "")}})
	if last := <-got; last != 1 {
		t.Fatalf("Wait returned %d, want 1", last)
	}
	if last, err := a.Wait(context.Background(), 0); err != nil || last != 1 {
		t.Fatalf("Wait(0) = %d, %v", last, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Wait(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with cancelled ctx = %v", err)
	}

	// Tail from 1 sees the record already there and those b appends next.
	tctx, stop := context.WithCancel(context.Background())
	defer stop()
	seen := make(chan eventlog.Record)
	go func() {
		defer close(seen)
		for r, err := range a.Tail(tctx, 1) {
			if err != nil {
				t.Error(err)
				return
			}
			seen <- r
		}
	}()
	for i := range 20 {
		if i > 0 {
			mustAppend(t, b, eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, fmt.Sprint(i))}})
		}
		r := <-seen
		if r.Seq != uint64(i+1) {
			t.Fatalf("tail yielded seq %d, want %d", r.Seq, i+1)
		}
	}
	stop()
	for range seen {
	}

	closed := make(chan error)
	go func() {
		_, err := a.Wait(context.Background(), 100)
		closed <- err
	}()
	a.Close()
	if err := <-closed; !errors.Is(err, eventlog.ErrClosed) {
		t.Fatalf("Wait across Close = %v, want ErrClosed", err)
	}
	if _, err := a.Append(context.Background(), eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, "")}}); !errors.Is(err, eventlog.ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
}

// TestTwoWriters: two Logs on one etcd append concurrently, some with the
// same idempotency keys and expected versions on shared streams: one
// contiguous sequence, every answer right, nothing twice.
func TestTwoWriters(t *testing.T) {
	c := startCluster(t, 1)
	logs := []*Log{open(t, c.Client(), Options{}), open(t, c.Client(), Options{})}
	const appenders, each = 16, 10
	type ack struct {
		key string
		res eventlog.Result
	}
	acks := make([][]ack, 2*appenders)
	var wg sync.WaitGroup
	for w := range 2 * appenders {
		l := logs[w%2]
		wg.Go(func() {
			for i := range each {
				// Appenders w and w^1 are on different Logs and share keys.
				key := fmt.Sprintf("k%d-%d", w/2, i)
				stream := fmt.Sprintf("s%d", w/2)
				res, err := l.Append(context.Background(), eventlog.Append{Stream: stream, Key: key, Entries: []eventlog.Entry{entry(1, key), entry(2, key)}})
				if err != nil {
					t.Errorf("appender %d: %v", w, err)
					return
				}
				acks[w] = append(acks[w], ack{key, res})
			}
		})
	}
	wg.Wait()
	recs := collect(t, logs[0], 0)
	if len(recs) != appenders*each*2 {
		t.Fatalf("log holds %d records, want %d (each key once)", len(recs), appenders*each*2)
	}
	checkContiguous(t, recs)
	written := map[string]int{}
	for _, as := range acks {
		for _, a := range as {
			if a.res.Last != a.res.First+1 {
				t.Fatalf("%s answered %+v", a.key, a.res)
			}
			for seq := a.res.First; seq <= a.res.Last; seq++ {
				if r := recs[seq-1]; string(r.Payload) != a.key || r.Key != a.key {
					t.Fatalf("%s answered seq %d, which holds %q", a.key, seq, r.Payload)
				}
			}
			if !a.res.Duplicate {
				written[a.key]++
			}
		}
	}
	for k, n := range written {
		if n != 1 {
			t.Fatalf("key %s written %d times", k, n)
		}
	}
	if len(written) != appenders*each {
		t.Fatalf("%d keys written, want %d", len(written), appenders*each)
	}
	for i := range appenders {
		if s, err := logs[1].Stream(fmt.Sprintf("s%d", i)); err != nil || len(s) != 2*each {
			t.Fatalf("stream s%d: %d records, %v", i, len(s), err)
		}
	}
	// Both see the whole log.
	for _, l := range logs {
		if last, err := l.Wait(context.Background(), uint64(len(recs)-1)); err != nil || last != uint64(len(recs)) {
			t.Fatalf("Wait: %d, %v", last, err)
		}
	}
	_ = time.Second
}

// TestTwoWritersExpectedVersions: appenders on two Logs race on four shared
// streams, each expecting the version it last learned (from its own result
// or a conflict). Every acknowledged append's version is the stream's
// record count at its last record, and the streams hold exactly the
// acknowledged records.
func TestTwoWritersExpectedVersions(t *testing.T) {
	c := startCluster(t, 1)
	logs := []*Log{open(t, c.Client(), Options{}), open(t, c.Client(), Options{})}
	const appenders, each, streams = 16, 15, 4
	var mu sync.Mutex
	var acked []eventlog.Result
	ackedStream := map[uint64]string{}
	conflicts := 0
	var wg sync.WaitGroup
	for w := range appenders {
		l := logs[w%2]
		wg.Go(func() {
			known := map[string]uint64{}
			for i := 0; i < each; {
				stream := fmt.Sprintf("s%d", (w+i)%streams)
				n := 1 + (w+i)%3
				entries := make([]eventlog.Entry, n)
				for j := range entries {
					entries[j] = entry(uint16(w), stream)
				}
				res, err := l.Append(context.Background(), eventlog.Append{Stream: stream, CheckVersion: true, Version: known[stream], Entries: entries})
				var ce *eventlog.ConflictError
				switch {
				case errors.As(err, &ce):
					if ce.Actual == known[stream] {
						t.Errorf("conflict at the expected version: %v", ce)
						return
					}
					known[stream] = ce.Actual
					mu.Lock()
					conflicts++
					mu.Unlock()
					continue
				case err != nil:
					t.Error(err)
					return
				}
				known[stream] = res.Version
				mu.Lock()
				acked = append(acked, res)
				ackedStream[res.First] = stream
				mu.Unlock()
				i++
			}
		})
	}
	wg.Wait()
	recs := collect(t, logs[0], 0)
	checkContiguous(t, recs)
	total := 0
	for _, res := range acked {
		total += int(res.Last - res.First + 1)
		stream := ackedStream[res.First]
		count := uint64(0)
		for _, r := range recs[:res.Last] {
			if r.Stream == stream {
				count++
			}
		}
		if count != res.Version {
			t.Fatalf("append at %d-%d to %s answered version %d; the stream holds %d records there", res.First, res.Last, stream, res.Version, count)
		}
	}
	if total != len(recs) {
		t.Fatalf("log holds %d records, %d acknowledged", len(recs), total)
	}
	t.Logf("%d appends, %d conflicts", len(acked), conflicts)
}

// TestBatchesSplitBySize: concurrent appends whose payloads fit one
// transaction each but not together are committed in several, none refused
// by etcd's request size limit, none chunked.
func TestBatchesSplitBySize(t *testing.T) {
	c := startCluster(t, 1)
	cli := c.Client()
	l := open(t, cli, Options{})
	const n = 24
	payload := pattern(400<<10, 9)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := l.Append(context.Background(), eventlog.Append{Stream: fmt.Sprint(i), Key: fmt.Sprint(i), Entries: []eventlog.Entry{{Kind: 1, Time: t0, Payload: payload}}}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	recs := collect(t, l, 0)
	if len(recs) != n {
		t.Fatalf("%d records, want %d", len(recs), n)
	}
	for _, r := range recs {
		if !bytes.Equal(r.Payload, payload) {
			t.Fatalf("record %d payload differs", r.Seq)
		}
	}
	if got := countChunks(t, cli); got != 0 {
		t.Fatalf("%d chunks stored for payloads that fit inline", got)
	}
}
