package replay

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/delegations/delegations/fsm"
)

// Point is a position in the log: a sequence number, or a time. The zero
// Point is the end of the log.
//
// A sequence number N selects the records 1 to N. A time T selects every
// record whose time is at or before T, in log order: times need not grow
// with sequence numbers (an imported event carries the legacy file's time),
// and each delegation's own events never go back in time, so this is each
// delegation as it was at T.
type Point struct {
	Seq  uint64
	Time time.Time
}

// ParsePoint reads a point as the CLI's --until takes it: a positive
// sequence number ("1234") or an RFC 3339 time ("2026-11-21T10:38:45Z",
// fractions allowed). Surrounding space is ignored.
func ParsePoint(s string) (Point, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Point{}, fmt.Errorf("%w: empty point; want a sequence number or an RFC 3339 time", fsm.ErrInvalid)
	}
	if s[0] >= '0' && s[0] <= '9' && !strings.ContainsAny(s, "-:T") {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			return Point{}, fmt.Errorf("%w: point %q: want a sequence number from 1, or an RFC 3339 time", fsm.ErrInvalid, s)
		}
		return Point{Seq: n}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.IsZero() {
		return Point{}, fmt.Errorf("%w: point %q: want a sequence number, or an RFC 3339 time such as 2026-11-21T10:38:45Z", fsm.ErrInvalid, s)
	}
	return Point{Time: t.UTC()}, nil
}

// IsZero reports whether p is the end of the log.
func (p Point) IsZero() bool { return p.Seq == 0 && p.Time.IsZero() }

// String returns the form ParsePoint reads: the sequence number, the time
// (milliseconds, UTC), or "" for the zero Point.
func (p Point) String() string {
	switch {
	case p.Seq != 0:
		return strconv.FormatUint(p.Seq, 10)
	case !p.Time.IsZero():
		return p.Time.UTC().Format(time.RFC3339Nano)
	}
	return ""
}

// MarshalJSON encodes p as {"seq": N} or {"time": "..."}.
func (p Point) MarshalJSON() ([]byte, error) {
	switch {
	case p.Seq != 0:
		return json.Marshal(struct {
			Seq uint64 `json:"seq"`
		}{p.Seq})
	case !p.Time.IsZero():
		return json.Marshal(struct {
			Time string `json:"time"`
		}{p.Time.UTC().Format(time.RFC3339Nano)})
	}
	return []byte("{}"), nil
}

// includes reports whether the record at seq with time t is part of the
// state as of p.
func (p Point) includes(seq uint64, t time.Time) bool {
	switch {
	case p.Seq != 0:
		return seq <= p.Seq
	case !p.Time.IsZero():
		return !t.After(p.Time)
	}
	return true
}
