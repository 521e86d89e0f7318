package projection

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
)

// View buckets. Every one is derived from the log by views.Project, in the
// transaction that appends the events, and can be rebuilt from the log.
//
// A delegation's ordinal is the sequence number of its first event (its
// registration, or import): 8 bytes, big-endian. The views that every
// event writes (summaries, texts) are keyed by it, so that the
// delegations that are live share the few leaf pages at the end of each,
// and the history's pages are never written again: keyed by the random
// id, each write of a store with a long history dirtied a page of its own.
// So are the views written once per delegation where that does (parents,
// members); those keyed by id (records, roots) are written once too.
const (
	bucketRecords   = "records"   // id → ordinal, then where its Summary is: rootPointer (the summaries view holds it), or the Summary itself (binary, AppendRecord)
	bucketTexts     = "texts"     // ordinal, n (1 byte) → where the record's n-th text (fsm.Delegation.Texts) is, when not empty: textRef, then the id
	bucketRoots     = "roots"     // root \0 id → ordinal: a root session's delegations, by id (the listing's order)
	bucketSummaries = "summaries" // root \0 ordinal → the record's Summary, binary: a root session's delegations in registration order
	bucketParents   = "parents"   // parent \0 ordinal → id: a parent session's delegations
	bucketRunning   = "running"   // root \0 createdAt \0 id → "": active, in registration order
	bucketUnread    = "unread"    // root \0 completedAt \0 id → "": terminal, notified, not read since
	bucketDeadlines = "deadlines" // timeoutAt \0 id → "": active, by deadline
	bucketPending   = "pending"   // id → "": terminal, artifact not yet persisted
	bucketCycles    = "cycles"    // parent → JSON of fsm.Cycle
	bucketMembers   = "members"   // ordinal → cycle number (8 bytes) the delegation joined, then its id
	bucketOutbox    = "outbox"    // notification id → JSON of Notification
	bucketDue       = "due"       // parent \0 notification id → "": the outbox by parent session
)

var viewBuckets = []string{
	bucketRecords, bucketRoots, bucketSummaries, bucketParents, bucketRunning, bucketUnread,
	bucketDeadlines, bucketPending, bucketCycles, bucketMembers, bucketOutbox, bucketDue, bucketTexts,
}

// AllCompleteQuiet is the quiet period between the last notification of a
// cycle and its all-complete notification (the plugin's 50 ms).
const AllCompleteQuiet = 50 * time.Millisecond

// Notification kinds.
const (
	KindTerminal    = "terminal"
	KindAllComplete = "all-complete"
)

// Notification is an entry of the outbox: a text to deliver to a parent
// session. It stays in the outbox, and is delivered again, until it is
// acknowledged.
type Notification struct {
	ID         string    `json:"id"`
	Kind       string    `json:"kind"`
	Delegation string    `json:"delegationId,omitempty"`
	Parent     string    `json:"parentSessionID"`
	Cycle      uint64    `json:"cycle,omitempty"`
	Text       string    `json:"text"` // rendered when read, with the store's data directory
	Remaining  int       `json:"remaining,omitempty"`
	DueAt      time.Time `json:"dueAt"`
	Failures   int       `json:"failures,omitempty"`
	LastError  string    `json:"lastError,omitempty"`
	Seq        uint64    `json:"seq"` // the event that made it due
}

// TerminalNotificationID and AllCompleteNotificationID name outbox entries:
// stable, so a retried ack or a redelivery refers to the same entry.
func TerminalNotificationID(id string) string { return KindTerminal + ":" + id }

func AllCompleteNotificationID(parent string, cycle uint64) string {
	return fmt.Sprintf("%s:%s:%d", KindAllComplete, parent, cycle)
}

// views is the projector that keeps every view bucket. Views depend on the
// events alone: texts that name the data directory (notifications) are
// rendered when read.
//
// Its name carries the version of the views' layout: a build that changes
// it renames the projector, so the log replays every record into it when a
// file written by an older build is opened (v1 kept records as JSON; v2
// kept no value in the roots view, so a listing read every whole record;
// v3 kept every text in the texts view, a second copy of its event's, and
// every summary in the records view, a second copy of the roots view's;
// v4 kept the summaries and texts by id, in no order of time).
type views struct{}

func (views) Name() string { return "views/v5" }

func (v views) Project(tx *eventlog.Tx, recs []eventlog.Record) error {
	if len(recs) > 0 && recs[0].Seq == 1 {
		// Projecting from the first record: the views start empty. This
		// drops what an older build's projector left, which the replay
		// would otherwise read as state (and, for records, fail to).
		for _, name := range viewBuckets {
			if err := tx.DeleteBucket(name); err != nil {
				return fmt.Errorf("drop view %s: %w", name, err)
			}
		}
	}
	w, err := openViews(tx)
	if err != nil {
		return err
	}
	for _, r := range recs {
		// Nothing of the event outlives its record's projection (every
		// key and value put is a copy), so its strings may share the
		// record's payload: a large text is hashed where it lies.
		e, err := fsm.UnmarshalPayloadNoCopy(fsm.Kind(r.Kind), r.Stream, r.Time, r.Payload)
		if err != nil {
			return fmt.Errorf("record %d: %w", r.Seq, err)
		}
		if parent, ok := fsm.ParentOfStream(r.Stream); ok {
			id := AllCompleteNotificationID(parent, e.Cycle)
			switch e.Kind {
			case fsm.KindAllCompleteNotified:
				err = w.unqueue(id)
			case fsm.KindNotificationFailed:
				err = w.failed(id, e.Error)
			}
			if err != nil {
				return err
			}
			continue
		}
		if err := v.apply(w, r.Seq, e); err != nil {
			if errors.Is(err, berrors.ErrKeyRequired) || errors.Is(err, berrors.ErrKeyTooLarge) {
				// A record that passed its checksum but names nothing the
				// views can key on: say which, not bbolt's bare words.
				return &eventlog.CorruptError{Seq: r.Seq, Reason: fmt.Sprintf(
					"the views cannot index this %s event of delegation %q (%v): the log holds events no build writes; run `delegations replay`", e.Kind, r.Stream, err)}
			}
			return fmt.Errorf("record %d: %w", r.Seq, err)
		}
	}
	return nil
}

// Unregistered reports whether d was never registered (nor imported): its
// events survived a recovery that lost its first one. Registration and
// import always set CreatedAt.
func Unregistered(d *fsm.Delegation) bool { return d.Version > 0 && d.CreatedAt.IsZero() }

// viewTx holds the view buckets of one transaction.
type viewTx struct {
	tx *eventlog.Tx
	b  map[string]*bolt.Bucket
}

// appendFill is the fill percent of the views keyed by ordinal: their
// inserts come at the end (of the bucket, or of a root session's range),
// so a page that splits stays nearly full, and no insert comes back to
// it. bbolt's default, 0.5, leaves every page of an appended bucket half
// empty for good. Some room is kept: a live delegation's summary grows.
const appendFill = 0.9

func openViews(tx *eventlog.Tx) (*viewTx, error) {
	w := &viewTx{tx: tx, b: make(map[string]*bolt.Bucket, len(viewBuckets))}
	for _, name := range viewBuckets {
		b, err := tx.Bucket(name)
		if err != nil {
			return nil, err
		}
		if name == bucketSummaries || name == bucketTexts || name == bucketParents || name == bucketMembers {
			b.FillPercent = appendFill // a handle's setting lasts its transaction
		}
		w.b[name] = b
	}
	return w, nil
}

// textUnchanged stands for a text the event leaves as it is: invalid
// UTF-8, so no event's text (decoded payloads are valid UTF-8) equals it.
const textUnchanged = "\xff"

// apply evolves one delegation's record and moves it between the views.
//
// The texts that grow with the work (prompt, progress, result, error) are
// kept apart from the record: the texts view names the event that set each
// one (textRef), written only by that event. The text itself stays in the
// event alone, so a text costs its bytes in the file once, and a command
// that changes none of them (start, ack, read, persisted, a late refused
// command) rewrites a record of a few hundred bytes, whatever its texts
// weigh.
func (v views) apply(w *viewTx, seq uint64, e fsm.Event) error {
	prev, ord, err := loadOrdinal(w.tx, e.ID)
	if err != nil {
		return err
	}
	if prev == nil {
		prev, ord = &fsm.Delegation{}, seq
	}
	seeded := *prev
	for _, t := range seeded.Texts() {
		*t = textUnchanged
	}
	next := fsm.Evolve(seeded, e)
	for i, t := range next.Texts() {
		if *t != textUnchanged {
			key := textKey(ord, i)
			if *t == "" {
				err = w.b[bucketTexts].Delete(key)
			} else {
				err = w.b[bucketTexts].Put(key, newTextRef(seq, *t).encode(e.ID))
			}
			if err != nil {
				return err
			}
		}
		*t = ""
	}
	// A fresh slice per Put: bbolt keeps the value until the commit.
	if Unregistered(&next) {
		// Events of a delegation whose registration is not in the log:
		// `delegations recover` keeps every intact record of a damaged
		// log, and the damage may have taken a delegation's registered
		// event but not the later ones. Its record is kept (show,
		// timeline), but it names no root, parent, project or deadline:
		// it is in no index and no cycle, no artifact is written for it
		// and no notification is sent. Replay's rules say the same.
		return w.b[bucketRecords].Put([]byte(e.ID), inlineRecord(ord, &next))
	}
	if err := v.moved(w, seq, ord, e, prev, &next); err != nil {
		return err
	}
	// The summaries view holds each indexed delegation's summary, so that
	// a listing reads one small value per delegation; the records view
	// then points there instead of holding it again, and the records and
	// roots views do not change after the registration.
	sum := ordKey(next.RootSessionID, ord)
	indexed := prev.Version == 0 && (e.Kind == fsm.KindRegistered || e.Kind == fsm.KindImported)
	if !indexed && (next.RootSessionID == "" || w.b[bucketSummaries].Get(sum) == nil) {
		return w.b[bucketRecords].Put([]byte(e.ID), inlineRecord(ord, &next))
	}
	if err := w.b[bucketSummaries].Put(sum, next.AppendRecord(nil)); err != nil { // its texts are out
		return err
	}
	if !indexed {
		return nil
	}
	if err := w.b[bucketRoots].Put(pairKey(next.RootSessionID, e.ID), be64(ord)); err != nil {
		return err
	}
	return w.b[bucketRecords].Put([]byte(e.ID), rootPointer(ord, next.RootSessionID))
}

// A records view value starts with the delegation's ordinal; then comes
// either rootPointerTag and the root session under which the summaries
// view holds its summary, or the summary itself, which starts with
// fsm.RecordVersion, never 0.
const rootPointerTag = 0

func rootPointer(ord uint64, root string) []byte {
	return append(append(be64(ord), rootPointerTag), root...)
}

func inlineRecord(ord uint64, d *fsm.Delegation) []byte {
	return d.AppendRecord(be64(ord))
}

// storedSummary returns the ordinal of id and the summary the records
// view entry v of id stands for: the rest of v, or the summaries view's
// value v points at.
func storedSummary(tx *eventlog.Tx, id string, v []byte) ([]byte, uint64, error) {
	if len(v) < 9 {
		return nil, 0, fmt.Errorf("records view %q: an entry of %d bytes, want an ordinal and a record (the view is derived: `delegations replay --rebuild`, daemon stopped, rebuilds it from the log)", id, len(v))
	}
	ord, v := binary.BigEndian.Uint64(v), v[8:]
	if v[0] != rootPointerTag {
		return v, ord, nil
	}
	root := v[1:]
	sums, err := tx.Bucket(bucketSummaries)
	if err != nil {
		return nil, 0, err
	}
	var sum []byte
	if sums != nil {
		sum = sums.Get(ordKey(string(root), ord))
	}
	if sum == nil {
		return nil, 0, fmt.Errorf("records view %q: points at root %q, where the summaries view does not hold it (the view is derived: `delegations replay --rebuild`, daemon stopped, rebuilds it from the log)", id, root)
	}
	return sum, ord, nil
}

// moved moves a delegation between the views for one event.
func (v views) moved(w *viewTx, seq, ord uint64, e fsm.Event, prev, next *fsm.Delegation) error {
	id := e.ID
	switch {
	case prev.Version == 0 && e.Kind == fsm.KindRegistered:
		return v.registered(w, ord, next)
	case prev.Version == 0 && e.Kind == fsm.KindImported:
		return v.imported(w, ord, next)
	case prev.State.Active() && next.State.Terminal():
		return v.terminated(w, prev, next)
	case prev.PersistedAt.IsZero() && !next.PersistedAt.IsZero():
		if err := w.b[bucketPending].Delete([]byte(id)); err != nil {
			return err
		}
		c, err := w.cycle(next.ParentSessionID)
		if err != nil {
			return err
		}
		return w.queue(Notification{
			ID:         TerminalNotificationID(id),
			Kind:       KindTerminal,
			Delegation: id,
			Parent:     next.ParentSessionID,
			Remaining:  c.Active,
			DueAt:      e.At,
			Seq:        seq,
		})
	case prev.NotifiedAt.IsZero() && !next.NotifiedAt.IsZero():
		return v.notified(w, seq, ord, next)
	case e.Kind == fsm.KindNotificationFailed:
		return w.failed(TerminalNotificationID(id), e.Error)
	case prev.Unread() && !next.Unread():
		return w.b[bucketUnread].Delete(rootTimeKey(prev.RootSessionID, prev.CompletedAt, id))
	}
	return nil
}

func (v views) registered(w *viewTx, ord uint64, d *fsm.Delegation) error {
	for _, put := range []struct {
		bucket     string
		key, value []byte
	}{
		{bucketParents, ordKey(d.ParentSessionID, ord), []byte(d.ID)},
		{bucketRunning, rootTimeKey(d.RootSessionID, d.CreatedAt, d.ID), nil},
		{bucketDeadlines, timeKey(d.TimeoutAt, d.ID), nil},
	} {
		if err := w.b[put.bucket].Put(put.key, put.value); err != nil {
			return err
		}
	}
	c, err := w.cycle(d.ParentSessionID)
	if err != nil {
		return err
	}
	if ended, started := c.Join(); started {
		// An all-complete of the cycle that ended, not acknowledged yet, is
		// never sent (as the plugin does).
		if err := w.unqueue(AllCompleteNotificationID(d.ParentSessionID, ended)); err != nil {
			return err
		}
	}
	if err := w.b[bucketMembers].Put(be64(ord), append(be64(c.Cycle), d.ID...)); err != nil {
		return err
	}
	return putJSON(w.b[bucketCycles], d.ParentSessionID, c)
}

// imported indexes an adopted legacy delegation under its parent session
// (apply files it under its root). It arrives terminal and persisted, and the plugin delivered its
// notification long ago: it joins no cycle, waits in no outbox and is not
// unread.
func (v views) imported(w *viewTx, ord uint64, d *fsm.Delegation) error {
	if d.ParentSessionID == "" {
		return nil // legacy files do not name the parent
	}
	return w.b[bucketParents].Put(ordKey(d.ParentSessionID, ord), []byte(d.ID))
}

func (v views) terminated(w *viewTx, prev, d *fsm.Delegation) error {
	if err := w.b[bucketRunning].Delete(rootTimeKey(prev.RootSessionID, prev.CreatedAt, d.ID)); err != nil {
		return err
	}
	if err := w.b[bucketDeadlines].Delete(timeKey(prev.TimeoutAt, d.ID)); err != nil {
		return err
	}
	if err := w.b[bucketPending].Put([]byte(d.ID), nil); err != nil {
		return err
	}
	if d.ParentSessionID == "" {
		// Its registration is not in the log (a log recovered from a
		// damaged file): it joined no parent's cycle.
		return nil
	}
	c, err := w.cycle(d.ParentSessionID)
	if err != nil {
		return err
	}
	c.Leave()
	return putJSON(w.b[bucketCycles], d.ParentSessionID, c)
}

// notified retires the terminal notification, marks the delegation unread
// and, when it was the last of its cycle, makes the all-complete due.
func (v views) notified(w *viewTx, seq, ord uint64, d *fsm.Delegation) error {
	if err := w.unqueue(TerminalNotificationID(d.ID)); err != nil {
		return err
	}
	if d.Unread() {
		if err := w.b[bucketUnread].Put(rootTimeKey(d.RootSessionID, d.CompletedAt, d.ID), nil); err != nil {
			return err
		}
	}
	c, err := w.cycle(d.ParentSessionID)
	if err != nil {
		return err
	}
	var member uint64
	if m := w.b[bucketMembers].Get(be64(ord)); len(m) >= 8 {
		member = binary.BigEndian.Uint64(m)
	}
	counted, allComplete := c.Notify(member)
	if !counted {
		return nil
	}
	if err := putJSON(w.b[bucketCycles], d.ParentSessionID, c); err != nil {
		return err
	}
	if !allComplete {
		return nil
	}
	id := AllCompleteNotificationID(d.ParentSessionID, c.Cycle)
	return w.queue(Notification{
		ID:     id,
		Kind:   KindAllComplete,
		Parent: d.ParentSessionID,
		Cycle:  c.Cycle,
		DueAt:  d.NotifiedAt.Add(AllCompleteQuiet),
		Seq:    seq,
	})
}

// queue puts n in the outbox, indexed under its parent session.
func (w *viewTx) queue(n Notification) error {
	if err := w.b[bucketDue].Put(pairKey(n.Parent, n.ID), nil); err != nil {
		return err
	}
	return putJSON(w.b[bucketOutbox], n.ID, n)
}

// unqueue removes notification id from the outbox and its parent's index,
// if it is there.
func (w *viewTx) unqueue(id string) error {
	raw := w.b[bucketOutbox].Get([]byte(id))
	if raw == nil {
		return nil
	}
	var n Notification
	if err := json.Unmarshal(raw, &n); err != nil {
		return fmt.Errorf("outbox entry %s: %w", id, err)
	}
	if err := w.b[bucketDue].Delete(pairKey(n.Parent, id)); err != nil {
		return err
	}
	return w.b[bucketOutbox].Delete([]byte(id))
}

// failed records a failed delivery on an outbox entry still waiting.
func (w *viewTx) failed(id, reason string) error {
	b := w.b[bucketOutbox]
	raw := b.Get([]byte(id))
	if raw == nil {
		return nil
	}
	var n Notification
	if err := json.Unmarshal(raw, &n); err != nil {
		return fmt.Errorf("outbox entry %s: %w", id, err)
	}
	n.Failures++
	n.LastError = reason
	return putJSON(b, id, n)
}

func (w *viewTx) cycle(parent string) (fsm.Cycle, error) {
	var c fsm.Cycle
	raw := w.b[bucketCycles].Get([]byte(parent))
	if raw == nil {
		return c, nil
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("cycle of %s: %w", parent, err)
	}
	return c, nil
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), raw)
}

// loadRecord reads a delegation's whole record, its texts included (each
// read from the event that set it); nil when there is none. A text whose
// event fails the log's checks is an error wrapping eventlog.ErrCorrupt:
// commands decide with it and artifacts are rendered from it, so what the
// damage took must not be written down as if it were the text.
func loadRecord(tx *eventlog.Tx, id string) (*fsm.Delegation, error) {
	return loadWithTexts(tx, id, false, lostDecided(id))
}

// lostDecided is what loadRecord makes of a text of delegation id whose
// event is damaged: an error.
func lostDecided(id string) func(i int, err error) (string, error) {
	return func(i int, err error) (string, error) {
		return "", fmt.Errorf("text %d of %q: %w (the log is damaged: `delegations verify` says where, `delegations recover` keeps every intact record)", i, id, err)
	}
}

// loadForProgress is loadRecord for a progress command, without the
// progress text of an active delegation, which the command replaces: a
// progress message costs its own text, not the one before it too. A
// terminal delegation's record is read whole: the late command is refused
// and the record returned as it is.
func loadForProgress(tx *eventlog.Tx, id string) (*fsm.Delegation, error) {
	d, ord, err := loadOrdinal(tx, id)
	if err != nil || d == nil {
		return d, err
	}
	skip := noText
	if d.State.Active() {
		skip = progressText
	}
	return d, addTexts(tx, d, ord, false, lostDecided(id), skip)
}

// Indexes into fsm.Delegation.Texts.
const (
	noText       = -1
	progressText = 1
)

// loadShown is loadRecord for what only shows a record (listings, the
// compaction block, notifications, a bridge's reconciliation): one damaged
// event costs its text, which says it is lost and what to run, not the
// record, nor every listing that shows it.
func loadShown(tx *eventlog.Tx, id string) (*fsm.Delegation, error) {
	return loadWithTexts(tx, id, false, lostShown)
}

// lostShown is what loadShown shows for a text whose event is damaged.
func lostShown(_ int, err error) (string, error) {
	return fmt.Sprintf("[text lost: %v. `delegations verify` says where; `delegations recover` keeps every intact record]", err), nil
}

// loadWithTexts reads a delegation's record and its texts, each checked
// against its length (and, when hashed, its hash); lost says what becomes
// of text i when its event fails the log's checks.
func loadWithTexts(tx *eventlog.Tx, id string, hashed bool, lost func(i int, err error) (string, error)) (*fsm.Delegation, error) {
	d, ord, err := loadOrdinal(tx, id)
	if err != nil || d == nil {
		return d, err
	}
	return d, addTexts(tx, d, ord, hashed, lost, noText)
}

// addTexts reads the texts of d, whose ordinal is ord, into it, all but
// text skip (noText: all).
func addTexts(tx *eventlog.Tx, d *fsm.Delegation, ord uint64, hashed bool, lost func(i int, err error) (string, error), skip int) error {
	all := d.Texts()
	want := all[:]
	if skip != noText {
		want = slices.Delete(slices.Clone(want), skip, skip+1)
	}
	return addTextsOf(tx, d, ord, want, hashed, lost)
}

// addTextsOf is addTexts of the texts of d among want (pointers into d,
// as d.Texts returns them): a reader that shows some reads only those.
func addTextsOf(tx *eventlog.Tx, d *fsm.Delegation, ord uint64, want []*string, hashed bool, lost func(i int, err error) (string, error)) error {
	b, err := tx.Bucket(bucketTexts)
	if err != nil || b == nil {
		return err
	}
	for i, t := range d.Texts() {
		if !slices.Contains(want, t) {
			continue
		}
		v := b.Get(textKey(ord, i))
		if v == nil {
			continue
		}
		if *t, err = readText(tx, v, i, hashed); err != nil {
			if !errors.Is(err, eventlog.ErrCorrupt) {
				return fmt.Errorf("texts view %q text %d: %w (the view is derived: `delegations replay --rebuild`, daemon stopped, rebuilds it from the log)", d.ID, i, err)
			}
			if *t, err = lost(i, err); err != nil {
				return err
			}
		}
	}
	return nil
}

// textRef is a texts view entry: the event that set the text, and the
// text's length and xxhash64, which a reader checks the text against; the
// delegation's id follows (the key holds its ordinal), for the tools that
// name what they find in the view.
//
//	version 1 byte (textRefVersion), seq 8 bytes, length 4 bytes, xxhash64 8 bytes (big-endian), id
type textRef struct {
	seq  uint64
	len  int
	hash uint64
	id   string
}

const (
	textRefVersion = 2
	textRefLen     = 1 + 8 + 4 + 8 // without the id
)

func newTextRef(seq uint64, text string) textRef {
	return textRef{seq: seq, len: len(text), hash: xxhash.Sum64String(text)}
}

func (r textRef) encode(id string) []byte {
	b := make([]byte, 1, textRefLen+len(id)) // a fresh slice per Put
	b[0] = textRefVersion
	b = binary.BigEndian.AppendUint64(b, r.seq)
	b = binary.BigEndian.AppendUint32(b, uint32(r.len))
	b = binary.BigEndian.AppendUint64(b, r.hash)
	return append(b, id...)
}

func decodeTextRef(v []byte) (textRef, error) {
	if len(v) <= textRefLen || v[0] != textRefVersion {
		return textRef{}, fmt.Errorf("entry of %d bytes (version %d) is not a text reference (more than %d bytes, version %d)", len(v), first(v), textRefLen, textRefVersion)
	}
	return textRef{
		seq:  binary.BigEndian.Uint64(v[1:]),
		len:  int(binary.BigEndian.Uint32(v[9:])),
		hash: binary.BigEndian.Uint64(v[13:]),
		id:   string(v[textRefLen:]),
	}, nil
}

func first(v []byte) int {
	if len(v) == 0 {
		return -1
	}
	return int(v[0])
}

// readText reads text i of a delegation from the event the texts view
// entry v names: the text that event sets, as views.apply found it, checked
// against the length the entry holds, and against its hash too when
// hashed is set (replay's inspection sets it; a command's read trusts the
// event's own checksums, which the log checks). An event that fails the
// log's checks is an error wrapping eventlog.ErrCorrupt.
func readText(tx *eventlog.Tx, v []byte, i int, hashed bool) (string, error) {
	ref, err := decodeTextRef(v)
	if err != nil {
		return "", err
	}
	r, err := tx.Record(ref.seq)
	if err != nil {
		return "", err
	}
	// The record's payload is memory of its own, which nothing else
	// holds: the text is taken from it without a copy.
	e, err := fsm.UnmarshalPayloadNoCopy(fsm.Kind(r.Kind), r.Stream, r.Time, r.Payload)
	if err != nil {
		return "", fmt.Errorf("record %d: %w", r.Seq, err)
	}
	var seeded fsm.Delegation
	for _, t := range seeded.Texts() {
		*t = textUnchanged
	}
	next := fsm.Evolve(seeded, e)
	text := *next.Texts()[i]
	switch {
	case text == textUnchanged:
		return "", fmt.Errorf("record %d (%s of %q) does not set this text", r.Seq, e.Kind, r.Stream)
	case len(text) != ref.len || hashed && xxhash.Sum64String(text) != ref.hash:
		return "", fmt.Errorf("record %d sets a text of %d bytes, hash %016x; the view expects %d bytes, hash %016x", r.Seq, len(text), xxhash.Sum64String(text), ref.len, ref.hash)
	}
	return text, nil
}

// loadStored reads a delegation's record as the records view holds it:
// without its texts (see views.apply); nil when there is none.
func loadStored(tx *eventlog.Tx, id string) (*fsm.Delegation, error) {
	d, _, err := loadOrdinal(tx, id)
	return d, err
}

// loadOrdinal is loadStored, with the delegation's ordinal.
func loadOrdinal(tx *eventlog.Tx, id string) (*fsm.Delegation, uint64, error) {
	b, err := tx.Bucket(bucketRecords)
	if err != nil || b == nil {
		return nil, 0, err
	}
	v := b.Get([]byte(id))
	if v == nil {
		return nil, 0, nil
	}
	v, ord, err := storedSummary(tx, id, v)
	if err != nil {
		return nil, 0, err
	}
	d, err := fsm.UnmarshalDelegation(v) // copies v: it outlives the transaction
	if err != nil {
		return nil, 0, fmt.Errorf("records view %q: %w (the view is derived; the log itself is unaffected)", id, err)
	}
	return &d, ord, nil
}

// textKey is the texts view's key of the i-th text of the delegation
// whose ordinal is ord.
func textKey(ord uint64, i int) []byte {
	return append(be64(ord), byte(i))
}

// ordKey is the summaries (or parents) view's key of the delegation of
// root (or parent) session whose ordinal is ord.
func ordKey(session string, ord uint64) []byte {
	return binary.BigEndian.AppendUint64(append(append(make([]byte, 0, len(session)+9), session...), 0), ord)
}

// Keys. Session ids never hold a NUL, so "a\0..." keys of one session sort
// together and apart from every other.
func pairKey(a, b string) []byte {
	return append(append(append(make([]byte, 0, len(a)+1+len(b)), a...), 0), b...)
}

func rootTimeKey(root string, t time.Time, id string) []byte {
	k := append(append(make([]byte, 0, len(root)+10+len(id)), root...), 0)
	k = binary.BigEndian.AppendUint64(k, uint64(t.UnixNano()))
	return append(append(k, 0), id...)
}

func timeKey(t time.Time, id string) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 9+len(id)), uint64(t.UnixNano()))
	return append(append(k, 0), id...)
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// idOfKey returns the delegation id at the end of a view key.
func idOfKey(k []byte) string {
	if i := bytes.LastIndexByte(k, 0); i >= 0 {
		return string(k[i+1:])
	}
	return string(k)
}
