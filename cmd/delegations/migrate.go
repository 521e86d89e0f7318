package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/etcdlog"
	"github.com/delegations/delegations/projection"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var migrateVerb = verb{
	name:     "migrate",
	synopsis: "--to etcd | --from etcd  --etcd URLS [--etcd-prefix P] [--etcd-cacert F --etcd-cert F --etcd-key F]",
	summary:  "copy the log into an empty etcd prefix (--to etcd) or an etcd log into a new data directory (--from etcd), verified record by record (daemon stopped)",
	example:  "delegations migrate --to etcd --etcd https://etcd1:2379,https://etcd2:2379 --etcd-prefix /delegations/",
	run:      runMigrate,
}

// migrateReport is what migrate did, for people and (--json) machines.
type migrateReport struct {
	Direction string `json:"direction"` // "to etcd" or "from etcd"
	Log       string `json:"log"`       // the data directory's log file
	Etcd      string `json:"etcd"`      // endpoints and prefix
	ID        string `json:"id"`        // the etcd log's id, which replicas bind to
	// ResumedAfter is how many records an interrupted run had copied
	// (0: none, a new copy).
	ResumedAfter uint64  `json:"resumedAfter"`
	Records      uint64  `json:"records"`      // records in the log, each compared after the copy
	Streams      int     `json:"streams"`      // stream versions compared
	Keys         int     `json:"keys"`         // idempotency keys compared
	Large        int     `json:"largePayload"` // payloads over eventlog.InlineLen (chunked in bbolt)
	Bytes        int64   `json:"payloadBytes"`
	Seconds      float64 `json:"seconds"`
	CopySeconds  float64 `json:"copySeconds"`          // of Seconds, the copy (the rest: checks before, verification after)
	ViewsBuilt   bool    `json:"viewsBuilt,omitempty"` // --from etcd: the new directory's views were built
	// Sealed is where --to etcd left the data directory's log, marked
	// migrated (eventlog.Seal); --from etcd into a directory whose log
	// was sealed for that etcd log keeps the sealed file there.
	Sealed string `json:"sealed,omitempty"`
}

func runMigrate(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e)
	to := fs.String("to", "", "etcd: copy the data directory's log into the etcd prefix, which must be empty")
	from := fs.String("from", "", "etcd: copy the etcd log into the data directory, which must have no log")
	shared := addEtcdFlags(fs)
	if _, err := parse(e, fs, args, 0); err != nil {
		return err
	}
	switch {
	case (*to == "") == (*from == ""):
		return usagef("give --to etcd (this data directory's log into etcd) or --from etcd (the etcd log into this data directory)")
	case *to != "" && *to != "etcd", *from != "" && *from != "etcd":
		return usagef("--to and --from take etcd, the only other store there is (the data directory is the bbolt side)")
	case *shared.endpoints == "":
		return usagef("--etcd URLS ($DELEGATIONS_ETCD) names the etcd cluster to migrate %s", map[bool]string{true: "to", false: "from"}[*to != ""])
	}
	cli, err := shared.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	dir, err := stoppedDataDir(ctx, e, "migrate needs the log file to itself")
	if err != nil {
		return err
	}
	m := &migration{
		cli:      cli,
		opts:     etcdlog.Options{Prefix: *shared.prefix, RequestTimeout: *shared.reqTimeout},
		progress: e.progress(),
		logger:   e.logger(),
	}
	start := time.Now()
	rep := &migrateReport{Etcd: m.etcd()}
	if *to != "" {
		err = m.toEtcd(ctx, dir, rep)
	} else {
		err = m.fromEtcd(ctx, dir, rep)
	}
	if err != nil {
		return err
	}
	rep.Seconds = time.Since(start).Seconds()
	if e.json {
		return writeJSON(e.stdout, rep)
	}
	_, err = fmt.Fprint(e.stdout, rep.text())
	return err
}

// stoppedDataDir resolves the data directory of a verb that needs its log
// file to itself, refusing it while a daemon serves it (why says what the
// verb does with the file).
func stoppedDataDir(ctx context.Context, e *env, why string) (string, error) {
	dir, err := dataDir(e.data)
	if err != nil {
		return "", err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return "", err
	}
	if c, err := api.Dial(ctx, socketPath(e.socket, dir)); err == nil {
		st, _ := c.Status(ctx)
		c.Close()
		return "", fmt.Errorf("a daemon (pid %d) serves %s: stop it first, %s", st.PID, dir, why)
	}
	return dir, nil
}

func (r *migrateReport) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Migrated %s %s: %d records", r.Log, r.Direction, r.Records)
	if r.Direction == "to etcd" {
		fmt.Fprintf(&b, " into %s (%s).\n", r.Etcd, r.ID)
	} else {
		fmt.Fprintf(&b, " from %s (%s).\n", r.Etcd, r.ID)
	}
	if r.ResumedAfter > 0 {
		fmt.Fprintf(&b, "Resumed an interrupted migration after record %d.\n", r.ResumedAfter)
	}
	fmt.Fprintf(&b, "Verified record by record: %d records (%d payload bytes, %d payloads over %d bytes), %d stream versions, %d idempotency keys; %.1fs in all, %.1fs of it copying.\n",
		r.Records, r.Bytes, r.Large, eventlog.InlineLen, r.Streams, r.Keys, r.Seconds, r.CopySeconds)
	if r.Direction == "to etcd" {
		fmt.Fprintf(&b, "Start daemons on it with `delegations --data NEW_DIR serve --etcd ... --etcd-prefix ...`, each on a new data directory.\n"+
			"This data directory's log is kept as it was, marked migrated: commands that write refuse it (its log would diverge), those that read still work; its artifact files stay here.\n")
	} else {
		if r.Sealed != "" {
			fmt.Fprintf(&b, "The log that was migrated from here to etcd is kept as %s.\n", r.Sealed)
		}
		if r.ViewsBuilt {
			b.WriteString("Views built; artifacts are written again from the log as delegations are read.\n")
		}
	}
	return b.String()
}

// migration holds what both directions share.
type migration struct {
	cli      *clientv3.Client
	opts     etcdlog.Options
	progress func(done, total int)
	logger   *slog.Logger
	// stopAfter, when set, ends the copy with errInterrupted once that
	// many records are in the target: tests interrupt a migration with it.
	stopAfter uint64
	batch     int // records per batch; batchRecords when 0
}

// etcd names the etcd side as a person gives it: endpoints and prefix.
func (m *migration) etcd() string {
	return strings.Join(m.cli.Endpoints(), ",") + " prefix " + m.opts.Prefix
}

// errInterrupted is the copy stopped by migration.stopAfter.
var errInterrupted = errors.New("migration interrupted")

// copyBatch bounds one batch of the copy: records, payload bytes.
const (
	batchRecords = 1024
	batchBytes   = 8 << 20
)

// copyRecords reads recs, which start at from, into batches that write
// puts, until total.
func (m *migration) copyRecords(recs iter.Seq2[eventlog.Record, error], from, total uint64, put func([]eventlog.Record) error) error {
	if from > total {
		return nil
	}
	max := m.batch
	if max == 0 {
		max = batchRecords
	}
	batch := make([]eventlog.Record, 0, max)
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := put(batch); err != nil {
			return err
		}
		last := batch[len(batch)-1].Seq
		clear(batch)
		batch, size = batch[:0], 0
		if m.progress != nil {
			m.progress(int(last), int(total))
		}
		if m.stopAfter != 0 && last >= m.stopAfter {
			return errInterrupted
		}
		return nil
	}
	for r, err := range recs {
		if err != nil {
			return err
		}
		if r.Seq > total {
			break
		}
		batch = append(batch, r)
		size += len(r.Payload)
		if len(batch) == max || size >= batchBytes || r.Seq == total {
			if err := flush(); err != nil {
				return err
			}
		}
		if r.Seq == total {
			return nil
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return fmt.Errorf("the source log ends before record %d", total)
}

// toEtcd copies dir's bbolt log into the etcd prefix.
func (m *migration) toEtcd(ctx context.Context, dir string, rep *migrateReport) error {
	rep.Direction = "to etcd"
	path := filepath.Join(dir, projection.LogFile)
	rep.Log = path
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no log at %s: nothing to migrate (check --data)", path)
	}
	// Read-only, under the file's shared lock: no daemon can start on it
	// meanwhile, and a running one makes Open fail with ErrLocked.
	src, err := eventlog.Open(path, eventlog.Options{ReadOnly: true, LockTimeout: 2 * time.Second, Logger: m.logger})
	if err != nil {
		return err
	}
	defer src.Close()
	var upstream string
	var sealed *eventlog.Migrated
	if err := src.View(func(tx *eventlog.Tx) error {
		upstream = tx.Upstream()
		sealed, err = tx.Migrated()
		return err
	}); err != nil {
		return err
	}
	if upstream != "" {
		return fmt.Errorf("%s is a replica of %s: its log already lives in etcd; nothing to migrate", path, upstream)
	}
	if sealed != nil {
		// Only the run that sealed it goes on (it stopped before it
		// marked the copy ready): a second copy elsewhere would fork the
		// log.
		if ok, err := m.resumable(ctx); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("migrate %s: %w", path, &eventlog.MigratedError{Migrated: *sealed})
		}
	}
	total := src.Last()
	if total == 0 {
		return fmt.Errorf("the log %s holds no records: nothing to migrate (daemons started with --etcd on an empty prefix begin a new log there)", path)
	}
	// A damaged source is refused before anything is written: a copy
	// would carry the damage, or stop at it.
	if err := src.Verify(ctx); err != nil {
		return fmt.Errorf("the log %s fails verification, so nothing was copied: %w", path, err)
	}
	im, err := etcdlog.StartImport(ctx, m.cli, m.opts, total)
	if sealed != nil && errors.Is(err, etcdlog.ErrNotEmpty) {
		return fmt.Errorf("migrate %s: %w", path, &eventlog.MigratedError{Migrated: *sealed})
	}
	if err != nil {
		return err
	}
	if rep.ID, err = im.ID(ctx); err != nil {
		return err
	}
	if sealed != nil && (!im.Resumed() || rep.ID != sealed.Log) {
		return fmt.Errorf("migrate %s: %w", path, &eventlog.MigratedError{Migrated: *sealed})
	}
	from := im.Next()
	if im.Resumed() {
		rep.ResumedAfter = from - 1
		if err := sameRecordAt(ctx, src, im.Record, from-1, total, m.opts.Prefix); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := m.copyRecords(src.Records(from), from, total, func(b []eventlog.Record) error { return im.Write(ctx, b) }); err != nil {
		return fmt.Errorf("copy %s into etcd: %w", path, err)
	}
	rep.CopySeconds = time.Since(start).Seconds()
	var want etcdlog.IndexSum
	if err := m.verify(rep, src, im, total, "bbolt", "etcd", &want); err != nil {
		return err
	}
	got, err := im.IndexSum()
	if err != nil {
		return fmt.Errorf("verify the copy: %w", err)
	}
	if got.N != want.N || got.Sum != want.Sum {
		return fmt.Errorf("verify the copy: the stream index in etcd names %d records (sum %016x), the records say %d (sum %016x); the copy is not marked ready: delete the prefix and migrate again",
			got.N, got.Sum, want.N, want.Sum)
	}
	// Sealed before the copy is marked ready, so that no daemon serves
	// the copy while the old log still opens for writing; a run stopped
	// between the two goes on when run again (Seal then does nothing).
	// Seal takes the file's own lock: give back the shared one.
	if err := src.Close(); err != nil {
		return err
	}
	if err := eventlog.Seal(path, eventlog.Migrated{To: "etcd " + m.etcd(), Log: rep.ID, Records: total, At: time.Now().UTC()},
		eventlog.Options{LockTimeout: 2 * time.Second}); err != nil {
		return fmt.Errorf("the copy in etcd is verified, but marking %s as migrated failed, so the copy is not marked ready: %w", path, err)
	}
	rep.Sealed = path
	return im.Finish(ctx)
}

// resumable reports whether the etcd prefix holds a head, which an
// interrupted import (or a log) writes: a sealed log migrated again can
// only go on with its own import, and an empty prefix must not be started.
func (m *migration) resumable(ctx context.Context) (bool, error) {
	timeout := max(m.opts.RequestTimeout, time.Second)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := m.cli.Get(cctx, m.opts.Prefix+"head", clientv3.WithCountOnly())
	if err != nil {
		return false, etcdlog.Describe(m.cli.Endpoints(), timeout, "read the log's head in etcd", err)
	}
	return resp.Count > 0, nil
}

// fromEtcd copies the etcd log into a new bbolt log in dir, then builds
// the views.
func (m *migration) fromEtcd(ctx context.Context, dir string, rep *migrateReport) error {
	rep.Direction = "from etcd"
	path := filepath.Join(dir, projection.LogFile)
	rep.Log = path
	// A log is never overwritten, but for one sealed when it was migrated
	// to this etcd log, which holds all its records: it is kept beside
	// the new one.
	sealed, err := sealedLog(path)
	if err != nil {
		return err
	}
	if sealed != nil {
		defer sealed.Close()
	}
	// The head says whether there is a log at all, before Open would
	// start one (it writes the log's id into an empty prefix).
	timeout := max(m.opts.RequestTimeout, time.Second)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	resp, err := m.cli.Get(cctx, m.opts.Prefix+"head")
	cancel()
	if err != nil {
		return etcdlog.Describe(m.cli.Endpoints(), timeout, "read the log's head in etcd", err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("no log under prefix %s in etcd (no %shead key): nothing to migrate (check --etcd-prefix)", m.opts.Prefix, m.opts.Prefix)
	}
	src, err := etcdlog.Open(ctx, m.cli, m.opts)
	if err != nil {
		return err
	}
	defer src.Close()
	rep.ID = src.ID()
	total, err := src.Head(ctx)
	if err != nil {
		return err
	}
	if sealed != nil && (sealed.to.Log != rep.ID || sealed.to.Records > total) {
		return fmt.Errorf("%s holds a log migrated to %s at %s (%s, %d records), not to this one (%s, %d records): migrate --from etcd brings back only the log it went to; give a new data directory with --data",
			path, sealed.to.To, sealed.to.At.Format(time.RFC3339), sealed.to.Log, sealed.to.Records, rep.ID, total)
	}
	if total == 0 {
		return fmt.Errorf("the etcd log under %s holds no records: nothing to migrate", m.opts.Prefix)
	}
	// The copy goes into a file of its own, renamed into place once
	// verified: an interrupted run leaves it, and the next one goes on
	// from its last record.
	staging := path + ".migrating"
	_, serr := os.Stat(staging)
	// The views are projected as the records go in, as a replica does.
	dst, err := eventlog.Open(staging, eventlog.Options{LockTimeout: 2 * time.Second, Logger: m.logger, Projectors: []eventlog.Projector{projection.ViewsProjector()}})
	if err != nil {
		return err
	}
	defer dst.Close()
	from := dst.Last() + 1
	if serr == nil && from > 1 {
		rep.ResumedAfter = from - 1
		fetch := func(_ context.Context, seq uint64) (eventlog.Record, error) {
			for r, err := range src.Range(seq, seq) {
				return r, err
			}
			return eventlog.Record{}, fmt.Errorf("record %d: not in the etcd log", seq)
		}
		if err := sameRecordAt(ctx, dst, fetch, from-1, total, staging); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := m.copyRecords(src.Range(from, total), from, total, dst.Import); err != nil {
		return fmt.Errorf("copy the etcd log into %s: %w", staging, err)
	}
	rep.CopySeconds = time.Since(start).Seconds()
	if now, err := src.Head(ctx); err != nil {
		return err
	} else if now != total {
		return fmt.Errorf("the etcd log grew from %d to %d records during the copy: a daemon writes to it. Stop every daemon on prefix %s and run migrate again: it goes on from %s", total, now, m.opts.Prefix, staging)
	}
	if err := dst.Verify(ctx); err != nil {
		return fmt.Errorf("the copy %s fails verification: %w; delete it and migrate again", staging, err)
	}
	if err := m.verify(rep, etcdUpTo{src, total}, dst, total, "etcd", "bbolt", nil); err != nil {
		return err
	}
	if sealed != nil {
		// The sealed log's records are the first of the copy: its last
		// one is the copy's.
		if err := sealed.within(dst); err != nil {
			return err
		}
	}
	if err := dst.Close(); err != nil {
		return err
	}
	if sealed != nil {
		// Keep the sealed log, then put the copy in its place in one
		// rename: path always holds a log.
		rep.Sealed = path + ".migrated-" + sealed.to.At.UTC().Format("20060102T150405Z")
		if err := os.Link(path, rep.Sealed); err != nil && !sameFile(path, rep.Sealed) {
			// (The same file there: a run stopped between the link and
			// the rename; it goes on.)
			return fmt.Errorf("keep the sealed log %s beside the copy: %w (the verified copy is at %s)", path, err, staging)
		}
		if err := os.Rename(staging, path); err != nil {
			return fmt.Errorf("put the verified copy in place: %w (it is at %s; the sealed log is also at %s)", err, staging, rep.Sealed)
		}
	} else {
		// Link, then remove: an existing log is never overwritten.
		if err := os.Link(staging, path); err != nil {
			return fmt.Errorf("put the verified copy in place: %w (it is at %s)", err, staging)
		}
		if err := os.Remove(staging); err != nil {
			return err
		}
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	// Opened as every command opens it: it finishes what the views need
	// (pending artifacts are written).
	s, err := projection.Open(dir, projection.Options{LockTimeout: 2 * time.Second, Logger: m.logger})
	if err != nil {
		return fmt.Errorf("the log is in place at %s, but building its views failed: %w", path, err)
	}
	rep.ViewsBuilt = true
	return s.Close()
}

// sealed is a data directory's log sealed by migrate --to etcd, open for
// reading (its shared lock held), and where it went.
type sealed struct {
	*eventlog.Log
	to eventlog.Migrated
}

// sealedLog returns the log at path if it is sealed, nil if there is
// none, and an error for a log that is not sealed: migrate --from etcd
// writes a new one.
func sealedLog(path string) (*sealed, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	holds := func(why string) error {
		return fmt.Errorf("%s already holds a log (%d bytes%s): migrate --from etcd writes a new one; give a new data directory with --data, or move that file away first", path, fi.Size(), why)
	}
	l, err := eventlog.Open(path, eventlog.Options{ReadOnly: true, LockTimeout: 2 * time.Second})
	if err != nil {
		return nil, holds(", which does not open: " + err.Error())
	}
	var to *eventlog.Migrated
	if err := l.View(func(tx *eventlog.Tx) error { to, err = tx.Migrated(); return err }); err != nil || to == nil {
		l.Close()
		if err != nil {
			return nil, holds(", whose seal is unreadable: " + err.Error())
		}
		return nil, holds("")
	}
	return &sealed{l, *to}, nil
}

// within checks that the sealed log's last record is the same in dst,
// which then holds the sealed log's records and more: replacing the
// sealed log with it loses nothing.
func (s *sealed) within(dst *eventlog.Log) error {
	seq := s.to.Records
	var a, b eventlog.Record
	err := s.View(func(tx *eventlog.Tx) (err error) { a, err = tx.Record(seq); return err })
	if err == nil {
		err = dst.View(func(tx *eventlog.Tx) (err error) { b, err = tx.Record(seq); return err })
	}
	if err != nil {
		return fmt.Errorf("compare record %d of the sealed log with the copy: %w", seq, err)
	}
	if d := recordDiff(a, b); d != "" {
		return fmt.Errorf("the sealed log's last record, %d, is not the etcd log's (%s): that log is not a continuation of it; the copy was not put in place", seq, d)
	}
	return nil
}

// sameRecordAt checks, before an interrupted migration goes on, that the
// last record the target holds is the same in the bbolt log and in etcd
// (other): else the target holds another log's records.
func sameRecordAt(ctx context.Context, bolt *eventlog.Log, other func(context.Context, uint64) (eventlog.Record, error), seq, total uint64, where string) error {
	if seq > total {
		return fmt.Errorf("%s holds an interrupted migration of %d records, more than the %d of this log: it is another log's; delete it (or use another target) and migrate again", where, seq, total)
	}
	var a eventlog.Record
	err := bolt.View(func(tx *eventlog.Tx) error {
		var err error
		a, err = tx.Record(seq)
		return err
	})
	if err != nil {
		return err
	}
	b, err := other(ctx, seq)
	if err != nil {
		return err
	}
	if d := recordDiff(a, b); d != "" {
		return fmt.Errorf("%s holds an interrupted migration of another log (record %d: %s); delete it (or use another target) and migrate again", where, seq, d)
	}
	return nil
}

// etcdUpTo is an etcd log read up to its record last.
type etcdUpTo struct {
	*etcdlog.Log
	last uint64
}

func (l etcdUpTo) Records(from uint64) iter.Seq2[eventlog.Record, error] {
	return l.Range(from, l.last)
}

// logReader is what both stores of a log offer for the comparison.
type logReader interface {
	Records(from uint64) iter.Seq2[eventlog.Record, error]
	StreamHeads() iter.Seq2[eventlog.StreamHead, error]
	Keys() iter.Seq2[eventlog.KeyEntry, error]
}

// verify compares the copy with the source: every record, field by field
// and payload byte by byte, then the stream versions and idempotency keys.
// index, when not nil, accumulates what the copy's stream index must say.
func (m *migration) verify(rep *migrateReport, src, dst logReader, total uint64, srcName, dstName string, index *etcdlog.IndexSum) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("verify the copy (%s) against the source (%s): %s; the copy is not put in use", dstName, srcName, fmt.Sprintf(format, args...))
	}
	next, stop := iter.Pull2(dst.Records(1))
	defer stop()
	var seq uint64
	for a, err := range src.Records(1) {
		if err != nil {
			return fail("reading the source: %v", err)
		}
		if a.Seq > total {
			break
		}
		b, err, ok := next()
		switch {
		case !ok:
			return fail("record %d is missing", a.Seq)
		case err != nil:
			return fail("reading the copy: %v", err)
		}
		if d := recordDiff(a, b); d != "" {
			return fail("record %d differs: %s", a.Seq, d)
		}
		if index != nil {
			index.Add(a)
		}
		seq = a.Seq
		rep.Bytes += int64(len(a.Payload))
		if len(a.Payload) > eventlog.InlineLen {
			rep.Large++
		}
		if m.progress != nil && seq%4096 == 0 {
			m.progress(int(seq), int(total))
		}
	}
	if seq != total {
		return fail("the source ends at record %d, before %d", seq, total)
	}
	if b, err, ok := next(); ok {
		if err != nil {
			return fail("reading the copy past its end: %v", err)
		}
		return fail("the copy holds record %d past the source's last, %d", b.Seq, total)
	}
	rep.Records = total
	var err error
	if rep.Streams, err = compareSeq(src.StreamHeads(), dst.StreamHeads(), func(h eventlog.StreamHead) string {
		return fmt.Sprintf("stream %q at version %d", h.Stream, h.Version)
	}); err != nil {
		return fail("stream versions: %v", err)
	}
	if rep.Keys, err = compareSeq(src.Keys(), dst.Keys(), func(k eventlog.KeyEntry) string {
		return fmt.Sprintf("idempotency key %q for records %d-%d", k.Key, k.First, k.Last)
	}); err != nil {
		return fail("idempotency keys: %v", err)
	}
	return nil
}

// compareSeq compares two ordered sequences entry by entry and returns how
// many there are.
func compareSeq[T comparable](a, b iter.Seq2[T, error], show func(T) string) (int, error) {
	next, stop := iter.Pull2(b)
	defer stop()
	n := 0
	for x, err := range a {
		if err != nil {
			return n, fmt.Errorf("reading the source: %w", err)
		}
		y, err, ok := next()
		switch {
		case !ok:
			return n, fmt.Errorf("the copy lacks %s", show(x))
		case err != nil:
			return n, fmt.Errorf("reading the copy: %w", err)
		case x != y:
			return n, fmt.Errorf("the source has %s, the copy %s", show(x), show(y))
		}
		n++
	}
	if y, err, ok := next(); ok {
		if err != nil {
			return n, fmt.Errorf("reading the copy: %w", err)
		}
		return n, fmt.Errorf("the copy also has %s", show(y))
	}
	return n, nil
}

// recordDiff says how two records differ, "" when they do not.
func recordDiff(a, b eventlog.Record) string {
	var d []string
	if a.Seq != b.Seq {
		d = append(d, fmt.Sprintf("sequence number %d vs %d", a.Seq, b.Seq))
	}
	if a.Kind != b.Kind {
		d = append(d, fmt.Sprintf("kind %d vs %d", a.Kind, b.Kind))
	}
	if a.Stream != b.Stream {
		d = append(d, fmt.Sprintf("stream %q vs %q", a.Stream, b.Stream))
	}
	if !a.Time.Equal(b.Time) {
		d = append(d, fmt.Sprintf("time %s vs %s", a.Time.Format(time.RFC3339Nano), b.Time.Format(time.RFC3339Nano)))
	}
	if a.Key != b.Key {
		d = append(d, fmt.Sprintf("idempotency key %q vs %q", a.Key, b.Key))
	}
	if !bytes.Equal(a.Payload, b.Payload) {
		d = append(d, fmt.Sprintf("payload %d bytes xxhash %016x vs %d bytes xxhash %016x", len(a.Payload), xxhash.Sum64(a.Payload), len(b.Payload), xxhash.Sum64(b.Payload)))
	}
	return strings.Join(d, ", ")
}

// sameFile reports whether paths a and b name the same file.
func sameFile(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}
