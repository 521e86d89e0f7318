package eventlogtest

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
)

// T0 is the time of the suite's entries.
var T0 = time.Date(2026, 11, 21, 10, 38, 45, 282_000_000, time.UTC)

// Entry is an entry of kind at T0 with payload.
func Entry(kind uint16, payload string) eventlog.Entry {
	return eventlog.Entry{Kind: kind, Time: T0, Payload: []byte(payload)}
}

// MustAppend appends a to l and fails the test on an error.
func MustAppend(t testing.TB, l Log, a eventlog.Append) eventlog.Result {
	t.Helper()
	res, err := l.Append(context.Background(), a)
	if err != nil {
		t.Fatalf("Append(%q): %v", a.Stream, err)
	}
	return res
}

// Collect reads every record of l from sequence number from on and fails
// the test on an error.
func Collect(t testing.TB, l Log, from uint64) []eventlog.Record {
	t.Helper()
	var out []eventlog.Record
	for r, err := range l.Records(from) {
		if err != nil {
			t.Fatalf("Records(%d): %v", from, err)
		}
		out = append(out, r)
	}
	return out
}

// CheckContiguous fails the test unless recs run from sequence number 1
// without gaps.
func CheckContiguous(t testing.TB, recs []eventlog.Record) {
	t.Helper()
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has sequence number %d", i+1, r.Seq)
		}
	}
}

// Pattern returns n bytes that differ from position to position and with
// seed, so that a chunk out of place or of another payload shows.
func Pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ byte(i>>11) ^ seed
	}
	return b
}

// sameRecord reports whether got is want, times compared as instants.
func sameRecord(got, want eventlog.Record) bool {
	return got.Seq == want.Seq && got.Kind == want.Kind && got.Stream == want.Stream && got.Key == want.Key &&
		got.Time.Equal(want.Time) && bytes.Equal(got.Payload, want.Payload)
}

// verify runs the log's own check of its records and indexes, where it has
// one (a bbolt file, plain or a replica).
func verify(t *testing.T, l Log) {
	t.Helper()
	v, ok := l.(interface{ Verify(context.Context) error })
	if !ok {
		return
	}
	if err := v.Verify(context.Background()); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

// reopen closes b.Log and opens it again.
func reopen(t *testing.T, b Backend) Log {
	t.Helper()
	if err := b.Log.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return b.Reopen(t)
}
