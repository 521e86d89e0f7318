package projection

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
	bolt "go.etcd.io/bbolt"
)

// TestDamagedTextCostsOnlyItself: a record of the log that fails its
// checksum holds a delegation's progress text. The delegation is still
// listed and carried into a compacted context (its text says it is lost and
// what to run), and its neighbours lose nothing; but what would decide with
// the text or write it down (a command, an artifact, show) refuses, naming
// the damage, instead of recording the placeholder as if it were the text;
// a progress, which replaces the text without reading it, does not.
func TestDamagedTextCostsOnlyItself(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg := Registration{ProjectID: "0123456789abcdef", RootSessionID: "ses_root", ParentSessionID: "ses_root", Agent: "a", Prompt: "the prompt"}
	hit, err := s.Register(ctx, reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Progress(ctx, hit.ID, "half way through the files"); err != nil {
		t.Fatal(err)
	}
	damaged := s.Log().Last() // the progressed event
	other, err := s.Register(ctx, reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Progress(ctx, other.ID, "reading the tests"); err != nil {
		t.Fatal(err)
	}
	s.Close()

	db, err := bolt.Open(filepath.Join(dir, LogFile), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("events"))
		k := binary.BigEndian.AppendUint64(nil, damaged)
		v := append([]byte(nil), b.Get(k)...)
		if i := strings.Index(string(v), "half way"); i < 0 {
			t.Fatalf("record %d does not hold the progress text", damaged)
		} else {
			v[i] ^= 0x20
		}
		return b.Put(k, v)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lost := func(text string) bool {
		return strings.HasPrefix(text, "[text lost: ") && strings.Contains(text, "delegations recover")
	}
	running, _, err := s.Carried("ses_root", 0)
	if err != nil || len(running) != 2 {
		t.Fatalf("Carried: %d running, %v; want both", len(running), err)
	}
	if running[0].ID != hit.ID || !lost(running[0].Progress) || running[0].Prompt != "the prompt" {
		t.Errorf("the damaged delegation in the block: %+v", running[0])
	}
	if running[1].ID != other.ID || running[1].Progress != "reading the tests" {
		t.Errorf("the intact neighbour: %+v", running[1])
	}
	active, err := s.Active(ActiveFilter{RootSessionID: "ses_root"})
	if err != nil || len(active) != 2 {
		t.Fatalf("Active: %d, %v; want both", len(active), err)
	}
	if _, err := s.Get(hit.ID); !errors.Is(err, eventlog.ErrCorrupt) || !strings.Contains(err.Error(), "delegations recover") {
		t.Errorf("Get of the damaged delegation: %v, want the damage named with what to run", err)
	}
	last := s.Log().Last()
	if _, err := s.Timeout(ctx, hit.ID); !errors.Is(err, eventlog.ErrCorrupt) {
		t.Errorf("a timeout, whose partial output is the lost text: %v, want the damage", err)
	}
	if s.Log().Last() != last {
		t.Errorf("the refused command appended %d events", s.Log().Last()-last)
	}
	if d, err := s.Complete(ctx, other.ID, "done", "", ""); err != nil || d.Result != "done" || d.PersistedAt.IsZero() {
		t.Errorf("the neighbour completes: %+v %v", d, err)
	}
	// A progress replaces the lost text without reading it.
	if d, err := s.Progress(ctx, hit.ID, "started over"); err != nil || d.Progress != "started over" || d.Prompt != "the prompt" {
		t.Errorf("a progress over the lost text: %+v %v", d, err)
	}
	if d, err := s.Get(hit.ID); err != nil || d.Progress != "started over" {
		t.Errorf("the record after it: %+v %v", d, err)
	}
}
