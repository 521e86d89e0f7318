package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// The views are checked by rebuilding them: the records replay reads go,
// besides its own fold, to the store's projector writing into a scratch
// file, and the rebuilt views are then compared with the live ones entry
// by entry, key order on both sides. The views' rules are thus only the
// projector's, and whatever layout it writes is compared byte for byte.

// Batches of records projected into the scratch file in one transaction.
const (
	batchRecords = 4096
	batchBytes   = 4 << 20
)

// rebuild projects records into a scratch file, in a goroutine of its own
// so that it overlaps with the reading and folding of the next ones.
type rebuild struct {
	scratch *eventlog.Scratch
	proj    eventlog.Projector
	batch   []eventlog.Record
	size    int
	work    chan []eventlog.Record
	free    chan []eventlog.Record
	pending sync.WaitGroup
	done    chan struct{}

	projected atomic.Uint64 // the last sequence number in the scratch file

	// refused is why the projector refused a record (the first one), or
	// the scratch file failed: then the rebuilt views are incomplete.
	// Written by the goroutine, read after wait.
	refused string
}

// newRebuild opens a scratch file in dir, or in the temporary directory
// when dir is not writable.
func newRebuild(dir string) (*rebuild, error) {
	s, err := eventlog.OpenScratch(dir)
	if err != nil {
		if s, err = eventlog.OpenScratch(os.TempDir()); err != nil {
			return nil, err
		}
	}
	rb := &rebuild{
		scratch: s, proj: projection.ViewsProjector(),
		work: make(chan []eventlog.Record, 1), free: make(chan []eventlog.Record, 2),
		done: make(chan struct{}),
	}
	go rb.run()
	return rb, nil
}

func (rb *rebuild) run() {
	defer close(rb.done)
	for recs := range rb.work {
		if rb.refused == "" {
			if err := rb.scratch.Project(rb.proj, recs); err != nil {
				rb.oneByOne(recs)
			}
		}
		rb.projected.Store(recs[len(recs)-1].Seq)
		clear(recs) // the payloads
		select {
		case rb.free <- recs[:0]:
		default:
		}
		rb.pending.Done()
	}
}

// oneByOne projects a batch the projector refused record by record,
// stepping over the ones it refuses (a payload that does not decode: the
// store could not have projected it either), and notes the first.
func (rb *rebuild) oneByOne(recs []eventlog.Record) {
	for i := range recs {
		if recs[i].Seq <= rb.scratch.Last() {
			continue
		}
		if err := rb.scratch.Project(rb.proj, recs[i:i+1]); err != nil && rb.refused == "" {
			rb.refused = fmt.Sprintf("the store's projection refuses record %d (%v), so the views cannot be rebuilt to compare them", recs[i].Seq, err)
		}
	}
}

// add queues a record for the scratch file.
func (rb *rebuild) add(r *eventlog.Record) {
	if rb.batch == nil {
		select {
		case rb.batch = <-rb.free:
		default:
			rb.batch = make([]eventlog.Record, 0, batchRecords)
		}
	}
	rb.batch = append(rb.batch, *r)
	rb.size += len(r.Payload) + len(r.Stream)
	if len(rb.batch) == cap(rb.batch) || rb.size >= batchBytes {
		rb.send()
	}
}

func (rb *rebuild) send() {
	if len(rb.batch) == 0 {
		return
	}
	rb.pending.Add(1)
	rb.work <- rb.batch
	rb.batch, rb.size = nil, 0
}

// wait returns once every record added is in the scratch file.
func (rb *rebuild) wait() {
	rb.send()
	rb.pending.Wait()
}

// waitProgress is wait, calling progress now and then with how far the
// rebuild has come, or returning early with ctx's error.
func (rb *rebuild) waitProgress(ctx context.Context, progress func(done, total int), total int) error {
	rb.send()
	done := make(chan struct{})
	go func() {
		rb.pending.Wait()
		close(done)
	}()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if progress != nil {
				progress(min(int(rb.projected.Load()), total), total)
			}
		}
	}
}

func (rb *rebuild) close() {
	close(rb.work)
	<-rb.done
	rb.scratch.Close()
}

// roundEntries is how many view entries one round of the comparison
// visits: a round holds a read transaction of the live file, short enough
// not to keep a writer waiting nor its freed pages from reuse. (A variable
// for the tests.)
var roundEntries = 4096

// catchUpInTx is how many records committed since the last round are read
// inside the round's transaction; more are read in short transactions first.
const catchUpInTx = 4096

// compareViews compares the live views with the rebuilt ones in rounds of
// short read transactions. Before each round the rebuild (and the replay's
// fold) catches up with the records committed since, so that each round
// compares both at the live transaction's point: on a live store, a
// difference is one the log cannot explain at that point. It returns the
// findings, whether the views were compared, and otherwise why not.
func compareViews(sc *scanner, rep *Report) (fs []Finding, compared bool, note string, err error) {
	c := &viewCheck{st: sc.st, count: map[string]int{}, extra: map[string]int{}, pairs: map[string]*viewPair{}}
	for {
		var finished, stop bool
		var catchUp bool
		if err := sc.ctx.Err(); err != nil {
			return nil, false, "", err
		}
		sc.rb.wait() // outside the live transaction: the rebuild may be seconds behind
		err := sc.log.View(func(ltx *eventlog.Tx) error {
			last := ltx.Last()
			rep.Last = last
			if last > sc.read {
				if !sc.opts.Until.IsZero() {
					note, stop = notAtEnd, true
					return nil
				}
				if last-sc.read > catchUpInTx {
					catchUp = true
					return nil
				}
				sc.tx = ltx // a dropped delegation is read back in it
				defer func() { sc.tx = nil }()
				for seq := sc.read + 1; seq <= last; seq++ {
					r, err := ltx.Record(seq)
					if err != nil {
						note, stop = notAtEnd, true // damaged: the next replay reports it
						return nil
					}
					d := decoded{r: r}
					d.e, d.err = decode(&r)
					sc.feed(&d)
				}
			}
			if cp := projection.ViewsCheckpoint(ltx); cp != last {
				fs, stop = []Finding{viewsBehind(cp, last)}, true
				return nil
			}
			sc.rb.wait()
			if sc.rb.refused != "" {
				note, stop = sc.rb.refused, true
				return nil
			}
			c.through = sc.read
			return sc.rb.scratch.View(func(stx *eventlog.Tx) error {
				var err error
				finished, err = c.round(ltx, stx)
				return err
			})
		})
		switch {
		case err != nil:
			return nil, false, "", err
		case stop:
			return fs, false, note, nil
		case catchUp:
			if err := sc.scan(sc.read + 1); err != nil {
				return nil, false, "", err
			}
			if len(sc.corrupt) > 0 {
				return nil, false, damagedNote, nil
			}
		case finished:
			return c.finish(), true, "", nil
		}
	}
}

// Why the views were not compared.
const (
	damagedNote = "the log has damaged records, so the replay lacks events the views were built from"
	notAtEnd    = "the replay stops before the end of the log, and the views hold the latest state"
	// viewsInVerify: replay checks the lifecycle from the log; the views
	// are verify's (and rebuild's) to compare.
	viewsInVerify = "delegations verify compares them"
)

func viewsBehind(checkpoint, last uint64) Finding {
	var seqs []uint64
	for s := checkpoint + 1; s <= last && len(seqs) < maxSeqs; s++ {
		seqs = append(seqs, s)
	}
	f := Finding{
		Code: CodeViewsBehind, Severity: SeverityWarning, Seqs: seqs,
		Diagnosis: fmt.Sprintf("the views reflect the log up to record %d, but it holds %d records: list, read, compaction and notifications do not see the newest events yet (records were appended without the store's projection, or its catch-up was interrupted). The views were not compared.", checkpoint, last),
		Missing:   "projection of records " + itoa(checkpoint+1) + " to " + itoa(last),
		Next:      "open the store (any delegations command does) to let the views catch up, or delegations replay --rebuild",
	}
	if checkpoint > last {
		f.Severity = SeverityError
		f.Diagnosis = fmt.Sprintf("the views claim to reflect record %d, past the last record %d: they were written for another log file. The views were not compared.", checkpoint, last)
		f.Missing = ""
		f.Next = viewNext
		f.Seqs = nil
	}
	return f
}

// maxViewFindings bounds the findings one view produces; past it, one more
// finding says how many were left out.
const maxViewFindings = 20

// maxPairs bounds the entries of one view held back to be paired with the
// same delegation's other entry (a wrong entry is one missing and one
// extra when its key holds what is wrong).
const maxPairs = 256

const viewNext = "delegations replay --rebuild regenerates every view from the log"

// viewCheck is the comparison's position and findings.
type viewCheck struct {
	st       *state
	through  uint64 // the last record the fold applied
	view     string // the view being compared; past every view's name once done
	key      []byte // the key to resume at; nil: the view's first
	live     *eventlog.Tx
	scratch  *eventlog.Tx
	findings []Finding
	count    map[string]int       // findings per view
	extra    map[string]int       // findings per view past maxViewFindings
	pairs    map[string]*viewPair // this view's entries held back, by delegation
}

// viewPair is a delegation's entry of a view the live file holds and the
// log does not explain (got), and the one the log says it should hold
// (want).
type viewPair struct {
	got, want *projection.ViewEntry
}

// round compares up to roundEntries entries from the position, and
// reports whether every view is done.
func (c *viewCheck) round(live, scratch *eventlog.Tx) (bool, error) {
	c.live, c.scratch = live, scratch
	names := live.ViewNames()
	for _, n := range scratch.ViewNames() {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	budget := roundEntries
	for _, name := range names {
		if name < c.view {
			continue
		}
		if name != c.view {
			c.view, c.key = name, nil
		}
		lc, sc := cursor(live, name), cursor(scratch, name)
		lk, lv := seek(lc, c.key)
		sk, sv := seek(sc, c.key)
		for lk != nil || sk != nil {
			if budget == 0 {
				if sk == nil || (lk != nil && bytes.Compare(lk, sk) < 0) {
					c.key = bytes.Clone(lk)
				} else {
					c.key = bytes.Clone(sk)
				}
				return false, nil
			}
			budget--
			switch cmp := compareKeys(lk, sk); {
			case cmp == 0:
				if !bytes.Equal(lv, sv) {
					c.differ(name, lk, lv, sv)
				}
				lk, lv = lc.Next()
				sk, sv = sc.Next()
			case cmp < 0:
				c.stray(name, lk, lv)
				lk, lv = lc.Next()
			default:
				c.missing(name, sk, sv)
				sk, sv = sc.Next()
			}
		}
		c.endView(name)
		c.view, c.key = name+"\x00", nil // sorts after name, before any other view
	}
	return true, nil
}

func cursor(tx *eventlog.Tx, name string) *bolt.Cursor {
	b, err := tx.Bucket(name)
	if err != nil || b == nil {
		return nil
	}
	return b.Cursor()
}

func seek(c *bolt.Cursor, key []byte) ([]byte, []byte) {
	switch {
	case c == nil:
		return nil, nil
	case key == nil:
		return c.First()
	}
	return c.Seek(key)
}

// compareKeys orders keys, the end (nil) after every key.
func compareKeys(a, b []byte) int {
	switch {
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return bytes.Compare(a, b)
}

// entry decodes a view entry into memory of its own.
func entry(view string, k, v []byte) *projection.ViewEntry {
	e := projection.DecodeViewEntry(view, bytes.Clone(k), bytes.Clone(v))
	return &e
}

// indexViews are the views that list delegations under a key holding what
// they are listed by: a wrong entry is a stray key and a missing one.
var indexViews = map[string]string{
	projection.ViewRoots:     "delegation_list and delegation_read of its root session do not see it, or list shows it wrong",
	projection.ViewParents:   "its parent session's index is wrong",
	projection.ViewRunning:   "compaction carries the wrong running delegations",
	projection.ViewDeadlines: "the deadline sweeper times out the wrong delegations",
	projection.ViewUnread:    "compaction carries the wrong unread results",
	projection.ViewPending:   "the store's start-up does not (or needlessly does) write its artifact",
	projection.ViewMembers:   "its parent's all-complete notification comes at the wrong time",
}

// why says why a delegation belongs in an index view, from the entry the
// log says it should have.
func why(view string, d *delegation, e *projection.ViewEntry) string {
	switch view {
	case projection.ViewRoots:
		return "it is registered under root " + quote(e.Session)
	case projection.ViewParents:
		return "it was delegated by parent " + quote(e.Session)
	case projection.ViewDeadlines:
		return "it is " + string(d.rec.State) + " with a deadline at " + fmtT(e.Time)
	case projection.ViewUnread:
		return "it was notified and not read since it completed"
	case projection.ViewPending:
		return "it is terminal and its artifact was never persisted"
	case projection.ViewMembers:
		return fmt.Sprintf("it joined cycle %d of its parent", e.Member)
	}
	return "it is " + string(d.rec.State)
}

// stepOf is the step of d that put it in an index view.
func stepOf(view string, d *delegation) uint64 {
	switch {
	case view == projection.ViewUnread && d.notified != 0:
		return d.notified
	case view == projection.ViewPending && d.terminal != 0:
		return d.terminal
	}
	return d.first
}

// wrongEntry says how a delegation's entry in an index view differs from
// the one the log says.
func wrongEntry(view string, got, want *projection.ViewEntry) string {
	switch view {
	case projection.ViewRoots:
		if got.Session != want.Session {
			return "the view files it under root " + quote(got.Session) + ", the log says " + quote(want.Session)
		}
		return fmt.Sprintf("the view has it at ordinal %d, the log says %d", got.Ordinal, want.Ordinal)
	case projection.ViewParents:
		return "the view files it under parent " + quote(got.Session) + ", the log says " + quote(want.Session)
	case projection.ViewDeadlines:
		return "the view has its deadline at " + fmtT(got.Time) + ", the log says " + fmtT(want.Time)
	case projection.ViewMembers:
		return fmt.Sprintf("the view has it in cycle %d, the log says %d", got.Member, want.Member)
	}
	return fmt.Sprintf("the view has %s at %s, the log says %s at %s", quote(got.Session), fmtT(got.Time), quote(want.Session), fmtT(want.Time))
}

// missing reports an entry the rebuilt view holds and the live one lacks.
func (c *viewCheck) missing(view string, k, v []byte) {
	want := entry(view, k, v)
	d := c.lookup(want.ID)
	switch {
	case want.Err != nil:
		c.add(view, Finding{Diagnosis: "the log says the view holds an entry under key " + quoteKey(k) + ", which it lacks."})
	case view == projection.ViewRecords && d != nil:
		c.add(view, Finding{Delegation: want.ID, Seqs: []uint64{d.first, d.last},
			Diagnosis: "the log holds events of " + want.ID + " but the records view has no record of it: show, list and read do not know it."})
	case view == projection.ViewTexts && d != nil:
		c.add(view, Finding{Delegation: want.ID, Seqs: []uint64{d.first, d.last},
			Diagnosis: fmt.Sprintf("the texts view lacks text %d of %s: show and read return it empty.", want.Text, want.ID)})
	case view == projection.ViewCycles:
		c.add(view, Finding{Parent: want.Session,
			Diagnosis: "the cycles view has no cycle for parent " + quote(want.Session) + ", the log says " + cycleText(*want.Cycle) + ": its next all-complete notification comes at the wrong time."})
	case view == projection.ViewOutbox:
		n := want.Notification
		c.add(view, Finding{Delegation: n.Delegation, Parent: n.Parent, Seqs: []uint64{n.Seq},
			Diagnosis: "notification " + n.ID + " is due since " + fmtT(n.DueAt) + " (record " + itoa(n.Seq) + ") but is not in the outbox: the bridge never gets it."})
	case view == projection.ViewDue:
		f := Finding{Parent: want.Session,
			Diagnosis: "notification " + want.ID + " is due but the due view does not file it under parent " + quote(want.Session) + ": notifications of that parent leave it out."}
		if n := c.notification(want.ID); n != nil {
			f.Delegation, f.Seqs = n.Delegation, []uint64{n.Seq}
		}
		c.add(view, f)
	case indexViews[view] != "" && d != nil:
		c.hold(view, want.ID, func(p *viewPair) { p.want = want })
	default:
		c.add(view, Finding{Delegation: want.ID, Diagnosis: "the " + view + " view lacks the entry " + quoteKey(k) + " the log says it holds."})
	}
}

// stray reports an entry the live view holds and the rebuilt one does not.
func (c *viewCheck) stray(view string, k, v []byte) {
	got := entry(view, k, v)
	d := c.lookup(got.ID)
	switch {
	case got.Err != nil:
		c.add(view, Finding{Delegation: got.ID, Diagnosis: "a malformed entry: " + got.Err.Error() + "."})
	case view == projection.ViewRecords && d == nil:
		c.add(view, Finding{Delegation: got.ID, Diagnosis: "the records view holds " + quote(got.ID) + ", which has no events in the log: show, list and read report a delegation that never existed."})
	case view == projection.ViewTexts && d == nil:
		c.add(view, Finding{Delegation: got.ID, Diagnosis: "the texts view holds a text of " + quote(got.ID) + ", which has no events in the log."})
	case view == projection.ViewTexts:
		projection.Resolve(c.live, got)
		c.add(view, Finding{Delegation: got.ID, Seqs: []uint64{d.first, d.last},
			Diagnosis: fmt.Sprintf("text %d of %s in the texts view is %s, the log says %s: show and read return the stored one.", got.Text, got.ID, short(string(got.Value)), short(""))})
	case view == projection.ViewCycles:
		c.add(view, Finding{Parent: got.Session, Diagnosis: "the cycles view holds a cycle for parent " + quote(got.Session) + ", which has no registered delegations in the log."})
	case view == projection.ViewOutbox:
		c.add(view, Finding{Delegation: got.ID, Parent: got.Notification.Parent, Seqs: []uint64{got.Notification.Seq},
			Diagnosis: "the outbox holds notification " + string(got.Key) + ", which the log says is not due: the bridge delivers it although it was acknowledged, or was never due."})
	case view == projection.ViewDue:
		c.add(view, Finding{Parent: got.Session,
			Diagnosis: "the due view files notification " + got.ID + " under parent " + quote(got.Session) + ", which the log says is not owed it now: notifications of that parent report an entry the outbox lacks."})
	case indexViews[view] != "" && d == nil:
		c.add(view, Finding{Delegation: got.ID, Diagnosis: "the " + view + " view lists " + quote(got.ID) + ", which has no events in the log: " + indexViews[view] + "."})
	case indexViews[view] != "":
		c.hold(view, got.ID, func(p *viewPair) { p.got = got })
	default:
		c.add(view, Finding{Delegation: got.ID, Diagnosis: "the " + view + " view holds the entry " + quoteKey(k) + ", which the log does not explain."})
	}
}

// differ reports an entry whose value differs.
func (c *viewCheck) differ(view string, k, lv, sv []byte) {
	got, want := entry(view, k, lv), entry(view, k, sv)
	switch view {
	case projection.ViewRecords: // pointers into each file's summaries view
		projection.Resolve(c.live, got)
		projection.Resolve(c.scratch, want)
	case projection.ViewTexts: // references to events of the one log
		projection.Resolve(c.live, got)
		projection.Resolve(c.live, want)
	}
	d := c.lookup(want.ID)
	switch {
	case got.Err != nil:
		c.add(view, Finding{Delegation: got.ID, Diagnosis: "a malformed entry: " + got.Err.Error() + "."})
	case (view == projection.ViewRecords || view == projection.ViewSummaries) && d != nil:
		c.add(view, Finding{Delegation: want.ID, Seqs: []uint64{d.first, d.last},
			Diagnosis: "the stored record of " + want.ID + " is not what its events replay to: " + recordDiff(got.Record, want.Record) +
				". Every reader (show, list, read, compaction) sees the stored one."})
	case view == projection.ViewTexts && d != nil:
		c.add(view, Finding{Delegation: want.ID, Seqs: []uint64{d.first, d.last},
			Diagnosis: fmt.Sprintf("text %d of %s in the texts view is %s, the log says %s: show and read return the stored one.", want.Text, want.ID, short(string(got.Value)), short(string(want.Value)))})
	case view == projection.ViewCycles:
		c.add(view, Finding{Parent: want.Session, Diagnosis: fmt.Sprintf("the cycle of parent %s is %s in the view, the log says %s: its all-complete notification comes at the wrong time, or never.",
			quote(want.Session), cycleText(*got.Cycle), cycleText(*want.Cycle))})
	case view == projection.ViewOutbox:
		c.add(view, Finding{Delegation: want.ID, Parent: want.Notification.Parent, Seqs: []uint64{want.Notification.Seq},
			Diagnosis: "notification " + string(k) + " in the outbox is not what the log says: " + outboxDiff(got.Notification, want.Notification) + "."})
	case indexViews[view] != "" && d != nil:
		c.add(view, Finding{Delegation: want.ID, Seqs: []uint64{stepOf(view, d)},
			Diagnosis: "the " + view + " view's entry for " + want.ID + " is wrong: " + wrongEntry(view, got, want) + "; " + indexViews[view] + "."})
	default:
		c.add(view, Finding{Delegation: want.ID, Diagnosis: "the " + view + " view's entry " + quoteKey(k) + " holds " + quoteKey(lv) + ", the log says " + quoteKey(sv) + "."})
	}
}

// hold keeps a delegation's stray or missing entry of an index view until
// the view is done, to report it with its counterpart as one wrong entry.
func (c *viewCheck) hold(view, id string, set func(*viewPair)) {
	p := c.pairs[id]
	if p == nil {
		if len(c.pairs) >= maxPairs {
			p = &viewPair{}
			set(p)
			c.pair(view, id, p)
			return
		}
		p = &viewPair{}
		c.pairs[id] = p
	}
	set(p)
}

func (c *viewCheck) endView(view string) {
	ids := make([]string, 0, len(c.pairs))
	for id := range c.pairs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		c.pair(view, id, c.pairs[id])
	}
	clear(c.pairs)
}

// pair reports a delegation's entries of an index view.
func (c *viewCheck) pair(view, id string, p *viewPair) {
	d := c.lookup(id)
	effect := indexViews[view]
	f := Finding{Delegation: id, Seqs: []uint64{stepOf(view, d)}}
	switch {
	case p.got != nil && p.want != nil:
		f.Diagnosis = "the " + view + " view's entry for " + id + " is wrong: " + wrongEntry(view, p.got, p.want) + "; " + effect + "."
	case p.want != nil:
		f.Diagnosis = "the " + view + " view does not list " + id + ", but " + why(view, d, p.want) + ": " + effect + "."
	default:
		f.Diagnosis = "the " + view + " view lists " + id + ", but the log says it should not be there: it is " + string(d.rec.State) + ": " + effect + "."
	}
	c.add(view, f)
}

// lookup returns delegation id as replayed (nil when the log has no
// event of it), from the fold or, dropped there, from its stream.
func (c *viewCheck) lookup(id string) *delegation {
	if id == "" {
		return nil
	}
	return c.st.lookup(c.live, id, c.through)
}

// notification reads notification id from the rebuilt outbox.
func (c *viewCheck) notification(id string) *projection.Notification {
	b, err := c.scratch.Bucket(projection.ViewOutbox)
	if err != nil || b == nil {
		return nil
	}
	v := b.Get([]byte(id))
	if v == nil {
		return nil
	}
	return entry(projection.ViewOutbox, []byte(id), v).Notification
}

func (c *viewCheck) add(view string, f Finding) {
	if c.count[view] >= maxViewFindings {
		c.extra[view]++
		return
	}
	c.count[view]++
	f.Code, f.Severity, f.View = CodeViewMismatch, SeverityError, view
	if f.Next == "" {
		f.Next = viewNext
	}
	if f.Seqs == nil {
		f.Seqs = []uint64{}
	}
	if d := c.lookup(f.Delegation); d != nil {
		f.group, f.Status = d.first, d.rec.State
	}
	c.findings = append(c.findings, f)
}

func (c *viewCheck) finish() []Finding {
	views := make([]string, 0, len(c.extra))
	for v := range c.extra {
		views = append(views, v)
	}
	slices.Sort(views)
	for _, view := range views {
		c.findings = append(c.findings, Finding{
			Code: CodeViewMismatch, Severity: SeverityError, View: view, Seqs: []uint64{},
			Diagnosis: fmt.Sprintf("%d more disagreements in the %s view are not listed.", c.extra[view], view),
			Next:      viewNext,
		})
	}
	return c.findings
}

func cycleText(c projection.CycleView) string {
	return fmt.Sprintf("cycle %d (%d active, %d members, %d notified)", c.Cycle, c.Active, c.Members, c.Notified)
}

// quoteKey shows a key or value, cut to 60 bytes.
func quoteKey(k []byte) string { return cut(fmt.Sprintf("%q", k), 60) }

// outboxDiff lists what differs between a stored notification and the
// expected one; the text is rendered when read, so it is not compared.
func outboxDiff(got, want *projection.Notification) string {
	var diffs []string
	cmpf := func(name string, g, w any) {
		if g != w {
			diffs = append(diffs, fmt.Sprintf("%s %v, want %v", name, g, w))
		}
	}
	cmpf("kind", got.Kind, want.Kind)
	cmpf("delegation", got.Delegation, want.Delegation)
	cmpf("parent", got.Parent, want.Parent)
	cmpf("cycle", got.Cycle, want.Cycle)
	cmpf("remaining", got.Remaining, want.Remaining)
	if !got.DueAt.Equal(want.DueAt) {
		diffs = append(diffs, "due "+fmtT(got.DueAt)+", want "+fmtT(want.DueAt))
	}
	cmpf("failures", got.Failures, want.Failures)
	cmpf("last error", got.LastError, want.LastError)
	cmpf("seq", got.Seq, want.Seq)
	if len(diffs) == 0 {
		return "the encodings differ"
	}
	return strings.Join(diffs, "; ")
}

// recordDiff names the fields where a stored record differs from the
// rebuilt one.
func recordDiff(stored, rebuilt []byte) string {
	got, err := fsm.UnmarshalDelegation(stored)
	if err != nil {
		return "the stored record does not decode (" + err.Error() + ")"
	}
	want, err := fsm.UnmarshalDelegation(rebuilt)
	if err != nil {
		return "the encodings differ"
	}
	gm, wm := jsonFields(got), jsonFields(want)
	var diffs []string
	keys := make([]string, 0, len(gm)+len(wm))
	for k := range gm {
		keys = append(keys, k)
	}
	for k := range wm {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range slices.Compact(keys) {
		if g, w := gm[k], wm[k]; g != w {
			diffs = append(diffs, k+" "+short(g)+", want "+short(w))
		}
	}
	if len(diffs) == 0 {
		return "the encodings differ"
	}
	return strings.Join(diffs, "; ")
}

func jsonFields(d fsm.Delegation) map[string]string {
	raw, err := json.Marshal(d)
	out := map[string]string{}
	if err != nil {
		return out
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return out
	}
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

// short shows a JSON value, cut to 60 bytes; "(none)" for a missing one.
func short(v string) string {
	if v == "" {
		return "(none)"
	}
	return cut(v, 60)
}

func fmtT(t time.Time) string {
	if t.IsZero() {
		return "(none)"
	}
	return fsm.FormatTime(t)
}
