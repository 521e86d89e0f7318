package fsm

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// The TLV layout of the event payload (event.go) and the delegation record
// (record.go): a version byte, then, for each non-zero field in strictly
// ascending tag order, tag (uvarint), length (uvarint) and value. Strings
// are their bytes; integers are a uvarint (signed ones zig-zag encoded like
// encoding/binary's varint) filling the value exactly; times are integers
// of Unix nanoseconds. Each codec has one field table, indexed by tag, that
// says which field of its struct a tag holds and how.

// A field table is an array indexed by tag of pointers to the fields of one
// value: *string and *State are strings; *time.Duration, *int64 and *int
// are signed integers; *uint64 and *Kind unsigned ones; *time.Time is an
// integer of Unix nanoseconds, not written when zero (a time outside the
// years 1678 to 2262 does not survive, and times come back in UTC without a
// monotonic reading). A nil entry is a tag that holds nothing. The codec
// below takes the table, not the value, so that decoding into a value on
// the stack leaves it there.

// discard is a field table entry for a string that is checked (valid
// UTF-8) and not kept.
type discard struct{}

// number returns the stored integer of the field p points to; written is
// false when it is zero and is not written.
func number(p any) (v uint64, written bool) {
	switch p := p.(type) {
	case *time.Duration:
		return zigzag(int64(*p)), *p != 0
	case *int64:
		return zigzag(*p), *p != 0
	case *int:
		return zigzag(int64(*p)), *p != 0
	case *uint64:
		return *p, *p != 0
	case *Kind:
		return uint64(*p), *p != 0
	case *time.Time:
		return zigzag(p.UnixNano()), !p.IsZero()
	}
	return 0, false
}

// setNumber stores the decoded integer u in the field p points to and
// reports whether it fits.
func setNumber(p any, u uint64) bool {
	switch p := p.(type) {
	case *time.Duration:
		*p = time.Duration(unzigzag(u))
	case *int64:
		*p = unzigzag(u)
	case *int:
		i := unzigzag(u)
		if int64(int(i)) != i {
			return false
		}
		*p = int(i)
	case *uint64:
		*p = u
	case *Kind:
		if u > 0xffff {
			return false
		}
		*p = Kind(u)
	case *time.Time:
		*p = time.Unix(0, unzigzag(u)).UTC()
	}
	return true
}

// valueLen is the length of the value of the field p points to; 0 when it
// is not written.
func valueLen(p any) int {
	switch p := p.(type) {
	case nil:
		return 0
	case *string:
		return len(*p)
	case *State:
		return len(*p)
	}
	if u, ok := number(p); ok {
		return uvarintLen(u)
	}
	return 0
}

// tlvSize returns the encoded length of the fields: what appendTLV appends.
func tlvSize(fields []any) int {
	n := 1
	for tag, p := range fields {
		if l := valueLen(p); l > 0 {
			n += uvarintLen(uint64(tag)) + uvarintLen(uint64(l)) + l
		}
	}
	return n
}

// appendTLV appends the encoding of the fields to b: deterministic, the
// same values always give the same bytes.
func appendTLV(b []byte, version byte, fields []any) []byte {
	b = append(b, version)
	for i, p := range fields {
		tag := uint64(i)
		switch p := p.(type) {
		case nil:
		case *string:
			b = appendStringField(b, tag, *p)
		case *State:
			b = appendStringField(b, tag, string(*p))
		default:
			if u, ok := number(p); ok {
				b = binary.AppendUvarint(b, tag)
				b = binary.AppendUvarint(b, uint64(uvarintLen(u)))
				b = binary.AppendUvarint(b, u)
			}
		}
	}
	return b
}

// appendStringField appends a string field; nothing when s is empty.
func appendStringField(b []byte, tag uint64, s string) []byte {
	if s == "" {
		return b
	}
	b = binary.AppendUvarint(b, tag)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeTLV decodes b, written by appendTLV with version (or a later
// version of the same layout), into the fields. Tags past the table are
// skipped, so older builds read newer encodings. It returns an error
// wrapping ErrCorruptPayload, never panics, for: an empty input, an unknown
// version byte, a truncated or overlong varint or value, tags that are not
// strictly ascending, an integer that does not fill its value exactly or
// does not fit its field, and a string that is not valid UTF-8.
//
// The strings share one allocation, a copy of b, unless omit is set: then
// the strings under the tags omit names are neither copied nor read, and
// the others are copied together, so that they keep nothing else of b
// alive (an omit that names no tag, with discard entries in the table,
// copies only the strings kept).
func decodeTLV(b []byte, version byte, fields []any, omit func(tag uint64) bool) error {
	return decodeTLVOf(b, "", version, fields, omit)
}

// decodeTLVOf is decodeTLV whose strings, when shared is b itself as a
// string (the same memory, not a copy), are slices of it.
func decodeTLVOf(b []byte, shared string, version byte, fields []any, omit func(tag uint64) bool) error {
	if len(b) == 0 {
		return corrupt("empty (want at least the version byte)")
	}
	if b[0] != version {
		return corrupt("unsupported format version %d (this build reads %d; upgrade it)", b[0], version)
	}
	// shared is string(b), made on the first string field if not given.
	// The strings kept apart from b (with omit), copied together at the end.
	type kept struct {
		tag        uint64
		start, end int
	}
	var keptArr [32]kept
	keep, keepLen := keptArr[:0], 0
	var tag uint64
	for p := 1; p < len(b); {
		at := p
		var start int
		var err error
		if tag, start, p, err = nextField(b, p, tag); err != nil {
			return err
		}
		if tag >= uint64(len(fields)) {
			continue // a tag from a later version
		}
		switch f := fields[tag].(type) {
		case nil:
		case discard:
			if !utf8.Valid(b[start:p]) {
				return corrupt("tag %d at byte %d: string is not valid UTF-8", tag, at)
			}
		case *string:
			if omit == nil {
				if *f, err = stringValue(b, start, p, &shared, tag, at); err != nil {
					return err
				}
				continue
			}
			if omit(tag) {
				continue
			}
			if !utf8.Valid(b[start:p]) {
				return corrupt("tag %d at byte %d: string is not valid UTF-8", tag, at)
			}
			keep = append(keep, kept{tag, start, p})
			keepLen += p - start
		case *State:
			vb, vs, ve, sh := b, start, p, &shared
			if omit != nil { // an unknown state name copies itself alone
				var own string
				vb, vs, ve, sh = b[start:p], 0, p-start, &own
			}
			if *f, err = stateValue(vb, vs, ve, sh, tag, at); err != nil {
				return err
			}
		default:
			u, n := binary.Uvarint(b[start:p])
			if n <= 0 || n != p-start {
				return corrupt("tag %d at byte %d: value is not one uvarint", tag, at)
			}
			if !setNumber(f, u) {
				return corrupt("tag %d at byte %d: %d does not fit its field", tag, at, u)
			}
		}
	}
	if len(keep) > 0 {
		var all strings.Builder
		all.Grow(keepLen)
		for _, k := range keep {
			all.Write(b[k.start:k.end])
		}
		s, p := all.String(), 0
		for _, k := range keep {
			*fields[k.tag].(*string), p = s[p:p+k.end-k.start], p+k.end-k.start
		}
	}
	return nil
}

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// nextField reads the tag and length of the field at b[p:], which follows
// a field tagged prev (0 before the first), and returns the tag and the
// bounds of the value: b[start:end]. The next field starts at end.
func nextField(b []byte, p int, prev uint64) (tag uint64, start, end int, err error) {
	at := p
	tag, n := binary.Uvarint(b[p:])
	if n <= 0 {
		return 0, 0, 0, corrupt("bad tag varint at byte %d", at)
	}
	p += n
	if tag <= prev {
		return 0, 0, 0, corrupt("tag %d at byte %d after tag %d (want strictly ascending tags)", tag, at, prev)
	}
	l, n := binary.Uvarint(b[p:])
	if n <= 0 {
		return 0, 0, 0, corrupt("bad length varint of tag %d at byte %d", tag, p)
	}
	p += n
	if l > uint64(len(b)-p) {
		return 0, 0, 0, corrupt("tag %d at byte %d: length %d exceeds the %d bytes left", tag, at, l, len(b)-p)
	}
	return tag, p, p + int(l), nil
}

// stringValue returns the value b[start:end] of the field tagged tag at
// byte at as a string. The strings of one input share one copy of it,
// *shared, made for the first non-empty one.
func stringValue(b []byte, start, end int, shared *string, tag uint64, at int) (string, error) {
	if !utf8.Valid(b[start:end]) {
		return "", corrupt("tag %d at byte %d: string is not valid UTF-8", tag, at)
	}
	if start == end {
		return "", nil
	}
	if *shared == "" {
		*shared = string(b)
	}
	return (*shared)[start:end], nil
}

// stateValue is stringValue for a State: a known state name does not
// touch the shared copy.
func stateValue(b []byte, start, end int, shared *string, tag uint64, at int) (State, error) {
	if s, ok := internStateBytes(b[start:end]); ok {
		return s, nil
	}
	s, err := stringValue(b, start, end, shared, tag, at)
	return State(s), err
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorruptPayload}, args...)...)
}
