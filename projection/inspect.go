package projection

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
)

// Read-only access to the views, for tools that check them against the log
// (replay, verify). Nothing here writes.

// The views, by the names InspectViews reports in ViewEntry.View.
const (
	ViewRecords   = bucketRecords   // id → the ordinal and the record without its texts (fsm.Delegation's Summary, binary), or where the summaries view holds it
	ViewRoots     = bucketRoots     // a root session's delegations, by id
	ViewSummaries = bucketSummaries // a root session's delegations' summaries, by ordinal
	ViewParents   = bucketParents   // a parent session's delegations
	ViewRunning   = bucketRunning   // active delegations, by root and creation time
	ViewUnread    = bucketUnread    // notified and not read since completion, by root and completion time
	ViewDeadlines = bucketDeadlines // active delegations, by deadline
	ViewPending   = bucketPending   // terminal delegations whose artifact is not persisted yet
	ViewCycles    = bucketCycles    // a parent session's current cycle
	ViewMembers   = bucketMembers   // the cycle each delegation joined
	ViewOutbox    = bucketOutbox    // notifications waiting for an acknowledgement
	ViewDue       = bucketDue       // the outbox's entries by parent session
	ViewTexts     = bucketTexts     // a record's texts (fsm.Delegation.Texts), apart from it
)

// CycleView is a parent session's current cycle as the cycles view holds it.
type CycleView = fsm.Cycle

// ViewEntry is one entry of a view, decoded. Which fields are set depends on
// View:
//
//	records    ID, Ordinal, Record (for a delegation the summaries view
//	           holds, read there: the records entry only points at it)
//	roots      Session (root), ID, Ordinal
//	summaries  Session (root), Ordinal, ID, Record (its Summary)
//	parents    Session (parent), Ordinal, ID
//	running    Session (root), Time (createdAt), ID
//	unread     Session (root), Time (completedAt), ID
//	deadlines  Time (timeoutAt), ID
//	pending    ID
//	cycles     Session (parent), Cycle
//	members    Ordinal, ID, Member
//	outbox     ID (the delegation, for a terminal notification), Notification
//	due        Session (parent), ID (the notification)
//	texts      Ordinal, ID, Text (the index in fsm.Delegation.Texts), Value (the text,
//	           read from the event the entry names: the one Value that is
//	           not the stored bytes; nil when that event fails the log's
//	           checks, a damage reading the log reports)
//
// Key, Value and Record alias the transaction's memory: they are valid
// only during the InspectViews callback. Err is set, with the fields that
// could be read, when the key or value is malformed.
type ViewEntry struct {
	View         string
	Key          []byte
	Value        []byte // the stored value as it is
	ID           string
	Session      string
	Time         time.Time
	Record       []byte // fsm.UnmarshalDelegation decodes it (a summary in roots)
	Notification *Notification
	Cycle        *CycleView
	Member       uint64
	Ordinal      uint64 // the sequence number of the delegation's first event
	Text         int    // texts: which of fsm.Delegation.Texts
	Err          error
}

// InspectViews calls fn for every entry of every view in tx, view by view
// (in the order of Views) and key by key. An error from fn stops the walk
// and is returned. Views that do not exist yet have no entries.
func InspectViews(tx *eventlog.Tx, fn func(ViewEntry) error) error {
	for _, name := range viewBuckets {
		if err := InspectView(tx, name, func(e ViewEntry) error {
			Resolve(tx, &e)
			return fn(e)
		}); err != nil {
			return err
		}
	}
	return nil
}

// InspectView calls fn for every entry of view name in tx, key by key,
// decoded from the stored bytes alone (DecodeViewEntry): a records entry's
// Record is its pointer and a texts entry's Value its reference, as a
// rebuild of the views into a file without the log compares them.
func InspectView(tx *eventlog.Tx, name string, fn func(ViewEntry) error) error {
	b, err := tx.Bucket(name)
	if err != nil || b == nil {
		return err
	}
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := fn(DecodeViewEntry(name, k, v)); err != nil {
			return err
		}
	}
	return nil
}

// InspectRecord returns the record of delegation id as the records view
// holds it in tx, or nil when it holds none. A text whose event fails the
// log's checks is left empty: reading the log reports that damage.
func InspectRecord(tx *eventlog.Tx, id string) (*fsm.Delegation, error) {
	return loadWithTexts(tx, id, true, func(int, error) (string, error) { return "", nil })
}

// ViewsCheckpoint returns the sequence number of the last record the views
// reflect. Below tx.Last(), the views are behind the log (they catch up the
// next time the store is opened).
func ViewsCheckpoint(tx *eventlog.Tx) uint64 {
	return tx.Checkpoint(views{}.Name())
}

// DecodeViewEntry decodes the entry of view name under key k with value v
// (replay names what differs between two copies of a view with it). A
// view it does not know is returned with Key and Value only.
func DecodeViewEntry(name string, k, v []byte) ViewEntry {
	e := ViewEntry{View: name, Key: k, Value: v}
	bad := func(format string, args ...any) ViewEntry {
		e.Err = fmt.Errorf("view %s key %q: "+format, append([]any{name, k}, args...)...)
		return e
	}
	switch name {
	case bucketRecords, bucketPending:
		e.ID = string(k)
		if name == bucketRecords {
			if len(v) < 9 {
				return bad("want an ordinal and a record")
			}
			e.Ordinal, e.Record = binary.BigEndian.Uint64(v), v
		}
	case bucketRoots, bucketDue:
		i := bytes.IndexByte(k, 0)
		if i < 0 {
			return bad("want <session> NUL <id>")
		}
		e.Session, e.ID = string(k[:i]), string(k[i+1:])
		if name == bucketRoots {
			if len(v) != 8 {
				return bad("ordinal is %d bytes, want 8", len(v))
			}
			e.Ordinal = binary.BigEndian.Uint64(v)
		}
	case bucketSummaries, bucketParents:
		i := bytes.IndexByte(k, 0)
		if i < 0 || len(k) != i+9 {
			return bad("want <session> NUL <ordinal>")
		}
		e.Session, e.Ordinal = string(k[:i]), binary.BigEndian.Uint64(k[i+1:])
		if name == bucketParents {
			e.ID = string(v)
			break
		}
		e.Record = v
		d, err := fsm.UnmarshalSummary(v)
		if err != nil {
			return bad("%v", err)
		}
		e.ID = d.ID
	case bucketRunning, bucketUnread:
		i := bytes.IndexByte(k, 0)
		if i < 0 || len(k) < i+1+8+1 || k[i+9] != 0 {
			return bad("want <root> NUL <time> NUL <id>")
		}
		e.Session = string(k[:i])
		e.Time = time.Unix(0, int64(binary.BigEndian.Uint64(k[i+1:i+9]))).UTC()
		e.ID = string(k[i+10:])
	case bucketDeadlines:
		if len(k) < 9 || k[8] != 0 {
			return bad("want <time> NUL <id>")
		}
		e.Time = time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))).UTC()
		e.ID = string(k[9:])
	case bucketCycles:
		e.Session = string(k)
		var c CycleView
		if err := json.Unmarshal(v, &c); err != nil {
			return bad("%v", err)
		}
		e.Cycle = &c
	case bucketMembers:
		if len(k) != 8 || len(v) <= 8 {
			return bad("want <ordinal> → <cycle number> <id>")
		}
		e.Ordinal, e.Member, e.ID = binary.BigEndian.Uint64(k), binary.BigEndian.Uint64(v), string(v[8:])
	case bucketTexts:
		if len(k) != 9 || int(k[8]) >= len((&fsm.Delegation{}).Texts()) {
			return bad("want <ordinal> <text number>")
		}
		e.Ordinal, e.Text = binary.BigEndian.Uint64(k), int(k[8])
		ref, err := decodeTextRef(v)
		if err != nil {
			return bad("%v", err)
		}
		e.ID = ref.id
	case bucketOutbox:
		var n Notification
		if err := json.Unmarshal(v, &n); err != nil {
			return bad("%v", err)
		}
		e.ID = n.Delegation
		e.Notification = &n
	}
	return e
}

// Resolve reads what a records or texts entry decoded by DecodeViewEntry
// points at, in tx: the summary the summaries view holds (Record), the text
// from the event that set it (Value; nil when that event fails the log's
// checks). Other entries are left as they are.
func Resolve(tx *eventlog.Tx, e *ViewEntry) {
	switch {
	case e.Err != nil:
	case e.View == bucketRecords:
		var err error
		if e.Record, _, err = storedSummary(tx, e.ID, e.Value); err != nil {
			e.Err = err
		}
	case e.View == bucketTexts:
		text, err := readText(tx, e.Value, e.Text, true)
		switch {
		case errors.Is(err, eventlog.ErrCorrupt):
			e.Value = nil
		case err != nil:
			e.Err = fmt.Errorf("view %s key %q: %w", e.View, e.Key, err)
		default:
			e.Value = []byte(text)
		}
	}
}
