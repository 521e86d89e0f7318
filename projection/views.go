package projection

import (
	"encoding/json"
	"fmt"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
)

// View bucket names. Views are derived data: rebuilding them from the log
// gives the same bytes.
const bucketRecords = "records" // delegation id → JSON of fsm.Delegation

// recordsView keeps every delegation's current record, the fold of its
// events, so that a command reads one key instead of its whole stream.
type recordsView struct{}

func (recordsView) Name() string { return "records" }

func (recordsView) Project(tx *eventlog.Tx, recs []eventlog.Record) error {
	b, err := tx.Bucket(bucketRecords)
	if err != nil {
		return err
	}
	for _, r := range recs {
		e, err := fsm.UnmarshalPayload(fsm.Kind(r.Kind), r.Stream, r.Time, r.Payload)
		if err != nil {
			return fmt.Errorf("record %d: %w", r.Seq, err)
		}
		d, err := loadRecord(tx, r.Stream)
		if err != nil {
			return err
		}
		if d == nil {
			d = &fsm.Delegation{}
		}
		next := fsm.Evolve(*d, e)
		v, err := json.Marshal(next)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(r.Stream), v); err != nil {
			return err
		}
	}
	return nil
}

// loadRecord reads a delegation's record; nil when there is none.
func loadRecord(tx *eventlog.Tx, id string) (*fsm.Delegation, error) {
	b, err := tx.Bucket(bucketRecords)
	if err != nil || b == nil {
		return nil, err
	}
	v := b.Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	var d fsm.Delegation
	if err := json.Unmarshal(v, &d); err != nil {
		return nil, fmt.Errorf("records view %q: %w (the view is derived; the log itself is unaffected)", id, err)
	}
	return &d, nil
}
