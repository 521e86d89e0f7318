package etcdlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/eventlogtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestContract runs the log's contract (eventlogtest) on etcd in both
// forms a process uses: a replica (an *eventlog.Log whose Options.Upstream
// is on etcd, as a daemon sharing the log holds) and the etcd Log itself,
// through which the replica appends and follows. Each clause has a prefix
// of its own on one cluster.
func TestContract(t *testing.T) {
	cli := startCluster(t, 1).Client()
	clauses := 0
	options := func() Options {
		clauses++
		return Options{Prefix: fmt.Sprintf("/contract/%d/", clauses)}
	}
	// An append holds at most MaxTxnOps-4 entries (Append).
	maxEntries := func(l *Log) int { return l.maxOps - 4 }
	t.Run("etcd", func(t *testing.T) {
		eventlogtest.Run(t, func(t *testing.T) eventlogtest.Backend {
			opts := options()
			l := open(t, cli, opts)
			again := func(t *testing.T) eventlogtest.Log { return open(t, cli, opts) }
			return eventlogtest.Backend{Log: l, Reopen: again, Writer: again, MaxEntries: maxEntries(l), PageLen: pageLen}
		})
	})
	t.Run("replica", func(t *testing.T) {
		eventlogtest.Run(t, func(t *testing.T) eventlogtest.Backend {
			opts, dir := options(), t.TempDir()
			var up *Log
			replica := func(t *testing.T, file string) eventlogtest.Log {
				up = open(t, cli, opts)
				l, err := eventlog.Open(filepath.Join(dir, file), eventlog.Options{Upstream: up})
				if err != nil {
					t.Fatalf("open replica: %v", err)
				}
				t.Cleanup(func() { l.Close() })
				return l
			}
			l := replica(t, "log.db")
			return eventlogtest.Backend{
				Log:        l,
				Reopen:     func(t *testing.T) eventlogtest.Log { return replica(t, "log.db") },
				Writer:     func(t *testing.T) eventlogtest.Log { return replica(t, "writer.db") },
				MaxEntries: maxEntries(up),
				// A replica reads its file 1024 records at a time (eventlog's
				// scanChunk), after its follower read them from etcd
				// pageLen at a time.
				PageLen: 1024,
			}
		})
	})
}

// TestUnwrittenAppendLeavesNoChunks: the chunks of an append that is not
// written (a duplicate, a conflict) are deleted.
func TestUnwrittenAppendLeavesNoChunks(t *testing.T) {
	cli := startCluster(t, 1).Client()
	l := open(t, cli, Options{})
	a := eventlog.Append{Stream: "big", Key: "big", Entries: []eventlog.Entry{{Kind: 7, Time: t0, Payload: pattern(3<<20+7, 1)}}}
	mustAppend(t, l, a)
	before := countChunks(t, cli)
	if before == 0 {
		t.Fatal("a 3 MiB payload was stored without chunks")
	}
	if res := mustAppend(t, l, a); !res.Duplicate {
		t.Fatalf("retry of a chunked append = %+v, want a duplicate", res)
	}
	a.Key, a.CheckVersion = "", true
	if _, err := l.Append(context.Background(), a); !errors.Is(err, eventlog.ErrConflict) {
		t.Fatalf("chunked append expecting version 0 of a stream at 1 = %v, want a conflict", err)
	}
	if after := countChunks(t, cli); after != before {
		t.Fatalf("unwritten chunked appends left %d chunks", after-before)
	}
}

// TestTail: Tail yields the records already there from any starting point,
// then each one another writer appends, never skipping nor repeating one,
// and ends with ErrClosed when its log closes.
func TestTail(t *testing.T) {
	c := startCluster(t, 1)
	a := open(t, c.Client(), Options{})
	b := open(t, c.Client(), Options{})
	const before, after = 2*pageLen + 3, 20
	for n := 0; n < before; n += 100 {
		entries := make([]eventlog.Entry, min(100, before-n))
		for i := range entries {
			entries[i] = entry(1, fmt.Sprint(n+i+1))
		}
		mustAppend(t, b, eventlog.Append{Stream: "s", Entries: entries})
	}
	type item struct {
		r   eventlog.Record
		err error
	}
	from := uint64(pageLen + 1)
	seen := make(chan item)
	go func() {
		defer close(seen)
		for r, err := range a.Tail(context.Background(), from) {
			seen <- item{r, err}
		}
	}()
	for seq := from; seq <= before+after; seq++ {
		if seq > before {
			mustAppend(t, b, eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, fmt.Sprint(seq))}})
		}
		it := <-seen
		if it.err != nil || it.r.Seq != seq || string(it.r.Payload) != fmt.Sprint(seq) {
			t.Fatalf("Tail(%d) yielded seq %d %q, %v; want seq %d", from, it.r.Seq, it.r.Payload, it.err, seq)
		}
	}
	a.Close()
	if it := <-seen; !errors.Is(it.err, eventlog.ErrClosed) {
		t.Fatalf("Tail across Close yielded %+v, want ErrClosed", it)
	}
	if _, open := <-seen; open {
		t.Fatal("Tail went on after ErrClosed")
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
