package eventlog_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/etcdlog"
	"github.com/delegations/delegations/eventlog/etcdlog/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The replica tests run a Log whose upstream is an etcdlog.Log on an
// embedded etcd cluster.

var t0 = time.Date(2026, 11, 21, 10, 38, 45, 282_000_000, time.UTC)

func entry(kind uint16, payload string) eventlog.Entry {
	return eventlog.Entry{Kind: kind, Time: t0, Payload: []byte(payload)}
}

// tally is a projector: records per stream, in a view; it refuses a record
// whose payload is "poison".
type tally struct{}

func (tally) Name() string { return "tally" }

func (tally) Project(tx *eventlog.Tx, recs []eventlog.Record) error {
	b, err := tx.Bucket("tally")
	if err != nil {
		return err
	}
	for _, r := range recs {
		if string(r.Payload) == "poison" {
			return errors.New("poisoned record")
		}
		var n uint64
		if v := b.Get([]byte(r.Stream)); v != nil {
			n = binary.BigEndian.Uint64(v)
		}
		if err := b.Put([]byte(r.Stream), binary.BigEndian.AppendUint64(nil, n+1)); err != nil {
			return err
		}
	}
	return nil
}

// tallyOf reads the projector's count for stream.
func tallyOf(t *testing.T, l *eventlog.Log, stream string) uint64 {
	t.Helper()
	var n uint64
	if err := l.View(func(tx *eventlog.Tx) error {
		b, err := tx.Bucket("tally")
		if b != nil {
			if v := b.Get([]byte(stream)); v != nil {
				n = binary.BigEndian.Uint64(v)
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// openReplica opens a replica at path of the log under prefix on cli.
func openReplica(t *testing.T, cli *clientv3.Client, prefix, path string) (*eventlog.Log, error) {
	t.Helper()
	up, err := etcdlog.Open(context.Background(), cli, etcdlog.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Open(path, eventlog.Options{Upstream: up, Projectors: []eventlog.Projector{tally{}}})
	if err != nil {
		up.Close()
		return nil, err
	}
	t.Cleanup(func() { l.Close() })
	return l, nil
}

func mustReplica(t *testing.T, cli *clientv3.Client, prefix, path string) *eventlog.Log {
	t.Helper()
	l, err := openReplica(t, cli, prefix, path)
	if err != nil {
		t.Fatalf("open replica: %v", err)
	}
	return l
}

func records(t *testing.T, l *eventlog.Log) []eventlog.Record {
	t.Helper()
	var out []eventlog.Record
	for r, err := range l.Records(0) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestReplicaContract runs one script of appends against a single-file
// log and against a replica, and requires the same answer to every call
// and the same records, streams, views and Wait behaviour: above the seam
// the two are indistinguishable.
func TestReplicaContract(t *testing.T) {
	c := etcdtest.Start(t, 1)
	dir := t.TempDir()
	local, err := eventlog.Open(filepath.Join(dir, "local.db"), eventlog.Options{Projectors: []eventlog.Projector{tally{}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { local.Close() })
	replica := mustReplica(t, c.Client(), "/contract/", filepath.Join(dir, "replica.db"))

	big := strings.Repeat("large payload ", 300_000) // over etcd's request limit: chunked upstream and locally
	script := []eventlog.Append{
		{Stream: "a", Entries: []eventlog.Entry{entry(1, "one"), entry(2, "two")}},
		{Stream: "b", Entries: []eventlog.Entry{entry(3, "")}},
		{Stream: "a", Entries: []eventlog.Entry{entry(4, "four")}, CheckVersion: true, Version: 2},
		{Stream: "a", Entries: []eventlog.Entry{entry(4, "stale")}, CheckVersion: true, Version: 2},    // conflict
		{Stream: "s", Key: "register-42", Entries: []eventlog.Entry{entry(1, "a"), entry(2, "b")}},     // keyed
		{Stream: "other", Key: "register-42", Entries: []eventlog.Entry{entry(9, "zzz")}},              // duplicate
		{Stream: "s2", CheckVersion: true, Version: 0, Entries: []eventlog.Entry{entry(1, "")}},        // new stream
		{Stream: "s2", CheckVersion: true, Version: 0, Entries: []eventlog.Entry{entry(1, "")}},        // conflict on a new stream
		{Stream: "big", Key: "big-1", Entries: []eventlog.Entry{entry(5, big), entry(6, "after big")}}, // chunked
		{Stream: "", Entries: []eventlog.Entry{entry(1, "")}},                                          // invalid
		{Stream: "s", Key: "register-42", Entries: []eventlog.Entry{entry(1, "a"), entry(2, "b")}},     // duplicate, same stream
		{Stream: "b", CheckVersion: true, Version: 1, Entries: []eventlog.Entry{entry(7, "b2"), entry(8, "b3")}},
	}
	for i, a := range script {
		want, werr := local.Append(context.Background(), a)
		got, gerr := replica.Append(context.Background(), a)
		if fmt.Sprint(got) != fmt.Sprint(want) || errors.Is(gerr, eventlog.ErrConflict) != errors.Is(werr, eventlog.ErrConflict) ||
			errors.Is(gerr, eventlog.ErrInvalid) != errors.Is(werr, eventlog.ErrInvalid) || (gerr == nil) != (werr == nil) {
			t.Fatalf("append %d: replica %+v, %v; single file %+v, %v", i, got, gerr, want, werr)
		}
		var ce *eventlog.ConflictError
		if errors.As(werr, &ce) {
			var gce *eventlog.ConflictError
			if !errors.As(gerr, &gce) || *gce != *ce {
				t.Fatalf("append %d: replica conflict %v, single file %v", i, gerr, werr)
			}
		}
		// Read your own writes: the views already hold the append.
		if werr == nil && tallyOf(t, replica, a.Stream) != tallyOf(t, local, a.Stream) {
			t.Fatalf("append %d: replica's view counts %d records of %q, the single file's %d", i,
				tallyOf(t, replica, a.Stream), a.Stream, tallyOf(t, local, a.Stream))
		}
	}
	if replica.Last() != local.Last() || local.Last() != 11 {
		t.Fatalf("Last: replica %d, single file %d, want 11", replica.Last(), local.Last())
	}
	if got, want := records(t, replica), records(t, local); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("records differ:\nreplica %.300v\n single %.300v", got, want)
	}
	for _, s := range []string{"a", "b", "s", "s2", "big", "other"} {
		got, gerr := replica.Stream(s)
		want, werr := local.Stream(s)
		if fmt.Sprint(got) != fmt.Sprint(want) || gerr != nil || werr != nil {
			t.Fatalf("Stream(%s): replica %d records, %v; single file %d, %v", s, len(got), gerr, len(want), werr)
		}
	}
	if err := replica.Verify(context.Background()); err != nil {
		t.Fatalf("Verify replica: %v", err)
	}

	// Wait wakes on records another writer appended upstream.
	woke := make(chan uint64)
	go func() {
		last, err := replica.Wait(context.Background(), replica.Last())
		if err != nil {
			t.Error(err)
		}
		woke <- last
	}()
	other, err := etcdlog.Open(context.Background(), c.Client(), etcdlog.Options{Prefix: "/contract/"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	res, err := other.Append(context.Background(), eventlog.Append{Stream: "z", Entries: []eventlog.Entry{entry(1, "from elsewhere")}})
	if err != nil {
		t.Fatal(err)
	}
	if last := <-woke; last != res.Last {
		t.Fatalf("Wait woke at %d, want %d", last, res.Last)
	}
	if n := tallyOf(t, replica, "z"); n != 1 {
		t.Fatalf("view of another writer's record: %d, want 1", n)
	}
	closed := make(chan error)
	go func() {
		_, err := replica.Wait(context.Background(), replica.Last())
		closed <- err
	}()
	replica.Close()
	if err := <-closed; !errors.Is(err, eventlog.ErrClosed) {
		t.Fatalf("Wait across Close = %v, want ErrClosed", err)
	}
	if _, err := replica.Append(context.Background(), script[0]); !errors.Is(err, eventlog.ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
}

// TestReplicasShareOneLog: two replicas append concurrently with expected
// versions; each reads its own writes at once, the other's once it has
// waited for them, and both files end identical, including after one was
// closed while the other wrote.
func TestReplicasShareOneLog(t *testing.T) {
	c := etcdtest.Start(t, 1)
	dir := t.TempDir()
	pathB := filepath.Join(dir, "b.db")
	a := mustReplica(t, c.Client(), "/share/", filepath.Join(dir, "a.db"))
	b := mustReplica(t, c.Client(), "/share/", pathB)

	var wg sync.WaitGroup
	for w, l := range []*eventlog.Log{a, b, a, b} {
		wg.Go(func() {
			stream := fmt.Sprintf("w%d", w)
			for i := range 20 {
				res, err := l.Append(context.Background(), eventlog.Append{
					Stream: stream, CheckVersion: true, Version: uint64(i), Entries: []eventlog.Entry{entry(1, fmt.Sprint(i))},
				})
				if err != nil {
					t.Errorf("%s append %d: %v", stream, i, err)
					return
				}
				if l.Last() < res.Last {
					t.Errorf("%s append %d acknowledged at %d before the replica applied it (last %d)", stream, i, res.Last, l.Last())
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Sync: once it returns, b holds what a appended before the call.
	res, err := a.Append(context.Background(), eventlog.Append{Stream: "sync", Entries: []eventlog.Entry{entry(1, "x")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b.Last() < res.Last || tallyOf(t, b, "sync") != 1 {
		t.Fatalf("after Sync b holds %d records (the append was %d) and counts %d of stream sync", b.Last(), res.Last, tallyOf(t, b, "sync"))
	}
	// Close b; a writes on; b catches up when it opens again.
	b.Close()
	for i := range 30 {
		if _, err := a.Append(context.Background(), eventlog.Append{Stream: "late", Entries: []eventlog.Entry{entry(2, fmt.Sprint(i))}}); err != nil {
			t.Fatal(err)
		}
	}
	b = mustReplica(t, c.Client(), "/share/", pathB)
	if b.Last() != a.Last() || a.Last() != 111 {
		t.Fatalf("after reopening, b holds %d records, a %d, want 111", b.Last(), a.Last())
	}
	if got, want := records(t, b), records(t, a); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatal("the replicas' records differ")
	}
	for _, s := range []string{"w0", "w1", "w2", "w3", "late"} {
		if tallyOf(t, a, s) != tallyOf(t, b, s) || tallyOf(t, b, s) == 0 {
			t.Fatalf("views of %s differ: a %d, b %d", s, tallyOf(t, a, s), tallyOf(t, b, s))
		}
	}
}

// TestReplicaBoundToItsLog: a file replicates one shared log; another
// prefix, a single-file writer and a file with records of its own are
// refused with a clear error; a reader may open the replica.
func TestReplicaBoundToItsLog(t *testing.T) {
	c := etcdtest.Start(t, 1)
	dir := t.TempDir()
	path := filepath.Join(dir, "replica.db")
	l := mustReplica(t, c.Client(), "/one/", path)
	if _, err := l.Append(context.Background(), eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, "x")}}); err != nil {
		t.Fatal(err)
	}
	l.Close()

	if _, err := openReplica(t, c.Client(), "/two/", path); !errors.Is(err, eventlog.ErrInvalid) || !strings.Contains(err.Error(), "/one/") {
		t.Fatalf("replica of another log: %v, want ErrInvalid naming /one/", err)
	}
	if _, err := eventlog.Open(path, eventlog.Options{}); !errors.Is(err, eventlog.ErrReplica) {
		t.Fatalf("single-file writer on a replica: %v, want ErrReplica", err)
	}
	ro, err := eventlog.Open(path, eventlog.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("reader on a replica: %v", err)
	}
	if ro.Last() != 1 {
		t.Fatalf("reader sees %d records, want 1", ro.Last())
	}
	ro.Close()
	// The same log still opens it.
	mustReplica(t, c.Client(), "/one/", path).Close()

	own := filepath.Join(dir, "own.db")
	single, err := eventlog.Open(own, eventlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := single.Append(context.Background(), eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, "mine")}}); err != nil {
		t.Fatal(err)
	}
	single.Close()
	if _, err := openReplica(t, c.Client(), "/one/", own); !errors.Is(err, eventlog.ErrInvalid) {
		t.Fatalf("replica over a file with its own records: %v, want ErrInvalid", err)
	}
}

// TestReplicaFormatBit: a replica's file carries the replica bit in its
// format byte, which the builds before it refuse, so that a build that
// ignores the upstream key cannot serve the file as a plain log; a plain
// writer and Seal refuse it and leave the bit; readers open it. A plain
// log, and a copy of the shared log into a plain file (migrate --from
// etcd's way: Import), carry no flag: only their layout, FormatVersion,
// which the builds before format 3 refuse (they cannot read its chunked
// records).
func TestReplicaFormatBit(t *testing.T) {
	c := etcdtest.Start(t, 1)
	dir := t.TempDir()
	path := filepath.Join(dir, "replica.db")
	l := mustReplica(t, c.Client(), "/bit/", path)
	for i := range 3 {
		if _, err := l.Append(context.Background(), eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, fmt.Sprint(i))}}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	wantFormat(t, path, eventlog.FormatVersion|eventlog.ReplicaBit)
	for _, old := range eventlog.OlderBuilds {
		if old.Opens(eventlog.FormatVersion | eventlog.ReplicaBit) {
			t.Errorf("a build %s opens the replica's file", old.Name)
		}
	}

	if _, err := eventlog.Open(path, eventlog.Options{}); !errors.Is(err, eventlog.ErrReplica) {
		t.Fatalf("single-file writer on a replica: %v, want ErrReplica", err)
	}
	if err := eventlog.Seal(path, eventlog.Migrated{To: "etcd", Log: "etcd log x", Records: 3}, eventlog.Options{}); !errors.Is(err, eventlog.ErrReplica) {
		t.Fatalf("Seal of a replica: %v, want ErrReplica", err)
	}
	wantFormat(t, path, eventlog.FormatVersion|eventlog.ReplicaBit)
	ro, err := eventlog.Open(path, eventlog.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("reader on a replica: %v", err)
	}
	if len(records(t, ro)) != 3 {
		t.Fatalf("a reader read %d records, want 3", len(records(t, ro)))
	}
	if err := ro.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
	ro.Close()
	l = mustReplica(t, c.Client(), "/bit/", path)
	if l.Last() != 3 {
		t.Fatalf("reopened, the replica holds %d records, want 3", l.Last())
	}
	l.Close()
	wantFormat(t, path, eventlog.FormatVersion|eventlog.ReplicaBit)

	// A plain log, written and opened again by a writer.
	plain := filepath.Join(dir, "plain.db")
	for range 2 {
		p, err := eventlog.Open(plain, eventlog.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Append(context.Background(), eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, "mine")}}); err != nil {
			t.Fatal(err)
		}
		p.Close()
		wantFormat(t, plain, eventlog.FormatVersion)
	}
	// The shared log copied into a plain file, as migrate --from etcd does.
	up, err := etcdlog.Open(context.Background(), c.Client(), etcdlog.Options{Prefix: "/bit/"})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	var recs []eventlog.Record
	for r, err := range up.Range(1, 3) {
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	back := filepath.Join(dir, "back.db")
	b, err := eventlog.Open(back, eventlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Import(recs); err != nil {
		t.Fatal(err)
	}
	b.Close()
	wantFormat(t, back, eventlog.FormatVersion)
	for _, old := range eventlog.OlderBuilds {
		if old.Opens(eventlog.FormatVersion) {
			t.Errorf("a build %s opens a file of format %d", old.Name, eventlog.FormatVersion)
		}
	}
}

// TestReplicaGetsBitOnOpen: a replica's file written before the replica
// bit (the upstream key alone, as the build before it wrote it; a build
// that knows replicas but not the bit opens it) gets the bit when its
// upstream opens it again, and nothing else changes; a reader and a
// refused plain writer leave it as it is.
func TestReplicaGetsBitOnOpen(t *testing.T) {
	c := etcdtest.Start(t, 1)
	path := filepath.Join(t.TempDir(), "replica.db")
	l := mustReplica(t, c.Client(), "/old/", path)
	if _, err := l.Append(context.Background(), eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, "x"), entry(1, "y")}}); err != nil {
		t.Fatal(err)
	}
	before := records(t, l)
	l.Close()
	// The file's records are this build's: only the format byte is the
	// older build's (its layout, 2).
	if err := eventlog.SetFormatByte(path, 2); err != nil {
		t.Fatal(err)
	}
	if !eventlog.OlderBuilds[1].Opens(2) {
		t.Fatalf("the build %s does not open the file it wrote", eventlog.OlderBuilds[1].Name)
	}

	ro, err := eventlog.Open(path, eventlog.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("reader on a replica without the bit: %v", err)
	}
	ro.Close()
	if _, err := eventlog.Open(path, eventlog.Options{}); !errors.Is(err, eventlog.ErrReplica) {
		t.Fatalf("single-file writer on a replica without the bit: %v, want ErrReplica", err)
	}
	wantFormat(t, path, eventlog.FormatVersion)

	l = mustReplica(t, c.Client(), "/old/", path)
	if got := records(t, l); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("records after the upgrade:\n%v\nwant\n%v", got, before)
	}
	if _, err := l.Append(context.Background(), eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, "z")}}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	wantFormat(t, path, eventlog.FormatVersion|eventlog.ReplicaBit)
}

// wantFormat fails t unless the format byte of the closed log at path is
// want.
func wantFormat(t *testing.T, path string, want byte) {
	t.Helper()
	if got, err := eventlog.FormatByte(path); err != nil || got != want {
		t.Fatalf("%s: format byte %#x (%v), want %#x", filepath.Base(path), got, err, want)
	}
}

// TestReplicaStopsOnProjectorError: a record committed upstream that a
// projector refuses cannot be dropped: the replica stops applying and
// refuses appends with ErrBroken naming the cause, and opening it again
// fails the same way rather than skip the record.
func TestReplicaStopsOnProjectorError(t *testing.T) {
	c := etcdtest.Start(t, 1)
	path := filepath.Join(t.TempDir(), "replica.db")
	l := mustReplica(t, c.Client(), "/poison/", path)
	_, err := l.Append(context.Background(), eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, "poison")}})
	if !errors.Is(err, eventlog.ErrBroken) || !strings.Contains(err.Error(), "poisoned record") {
		t.Fatalf("append of a record the projector refuses: %v, want ErrBroken naming the cause", err)
	}
	if _, err := l.Append(context.Background(), eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, "fine")}}); !errors.Is(err, eventlog.ErrBroken) {
		t.Fatalf("append after the replica stopped: %v, want ErrBroken", err)
	}
	if l.Last() != 0 {
		t.Fatalf("the replica applied %d records past the one it refused", l.Last())
	}
	l.Close()
	if _, err := openReplica(t, c.Client(), "/poison/", path); !errors.Is(err, eventlog.ErrBroken) {
		t.Fatalf("reopen: %v, want ErrBroken", err)
	}
}

// TestReplicaSurvivesMemberStop: with one member of three stopped, the
// replica appends and applies as before. An append may meet the election
// that follows (ErrUnavailable): it is retried with its key, as a caller
// would.
func TestReplicaSurvivesMemberStop(t *testing.T) {
	c := etcdtest.Start(t, 3)
	l := mustReplica(t, c.Client(), "/quorum/", filepath.Join(t.TempDir(), "replica.db"))
	c.Stop(0)
	for i := range 10 {
		a := eventlog.Append{Stream: "s", Key: fmt.Sprint("k", i), CheckVersion: true, Version: uint64(i), Entries: []eventlog.Entry{entry(1, fmt.Sprint(i))}}
		var err error
		for range 10 {
			if _, err = l.Append(context.Background(), a); !errors.Is(err, etcdlog.ErrUnavailable) {
				break
			}
		}
		if err != nil {
			t.Fatalf("append %d with a quorum up: %v", i, err)
		}
	}
	if n := tallyOf(t, l, "s"); n != 10 {
		t.Fatalf("view counts %d records, want 10", n)
	}
}

// unreachable is an upstream that commits appends and then cannot be
// reached: its tail never yields what it committed (etcd gone right after
// answering), so a replica's follower waits on it for ever.
type unreachable struct {
	mu       sync.Mutex
	last     uint64
	appended chan struct{} // told of each committed append
}

func (u *unreachable) Append(_ context.Context, a eventlog.Append) (eventlog.Result, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	first := u.last + 1
	u.last += uint64(len(a.Entries))
	u.appended <- struct{}{}
	return eventlog.Result{First: first, Last: u.last, Version: uint64(len(a.Entries))}, nil
}

func (u *unreachable) Tail(ctx context.Context, _ uint64) iter.Seq2[eventlog.Record, error] {
	return func(func(eventlog.Record, error) bool) { <-ctx.Done() }
}

func (u *unreachable) Head(context.Context) (uint64, error) { return 0, nil }
func (u *unreachable) ID() string                           { return "unreachable" }
func (u *unreachable) Close() error                         { return nil }

// TestCloseWhileAppendWaitsForFollower: an append committed upstream waits
// for the follower whatever its ctx does; when the follower cannot get the
// records, Close still returns, and the append says it was committed
// upstream and not applied here.
func TestCloseWhileAppendWaitsForFollower(t *testing.T) {
	up := &unreachable{appended: make(chan struct{}, 1)}
	l, err := eventlog.Open(filepath.Join(t.TempDir(), "replica.db"), eventlog.Options{Upstream: up})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	appendErr := make(chan error, 1)
	go func() {
		_, err := l.Append(ctx, eventlog.Append{Stream: "s", Entries: []eventlog.Entry{entry(1, "x")}})
		appendErr <- err
	}()
	guard := time.NewTimer(30 * time.Second) // a liveness bound: a hang fails the test
	defer guard.Stop()
	select {
	case <-up.appended:
	case <-guard.C:
		t.Fatal("the append never reached the upstream")
	}
	cancel() // ignored: the append is committed upstream
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-guard.C:
		t.Fatal("Close waits for an append that waits for a follower that cannot catch up")
	}
	select {
	case err := <-appendErr:
		if !errors.Is(err, eventlog.ErrClosed) || !strings.Contains(err.Error(), "committed upstream as records 1-1") {
			t.Fatalf("append: %v, want ErrClosed saying it was committed upstream", err)
		}
	case <-guard.C:
		t.Fatal("the append did not return")
	}
}
