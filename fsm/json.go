package fsm

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends d's JSON form to b: the bytes MarshalJSON returns,
// written without reflection (a listing encodes thousands of records).
func (d *Delegation) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = AppendJSONString(b, d.ID, true)
	str := func(name, v string) {
		if v != "" {
			b = append(append(append(b, ",\""...), name...), "\":"...)
			b = AppendJSONString(b, v, true)
		}
	}
	tm := func(name string, t time.Time) {
		if !t.IsZero() {
			b = append(append(append(b, ",\""...), name...), "\":\""...)
			b = append(appendJSONTime(b, t), '"')
		}
	}
	num := func(name string, v int64) {
		if v != 0 {
			b = append(append(append(b, ",\""...), name...), "\":"...)
			b = strconv.AppendInt(b, v, 10)
		}
	}
	str("projectId", d.ProjectID)
	str("rootSessionID", d.RootSessionID)
	str("parentSessionID", d.ParentSessionID)
	str("parentMessageID", d.ParentMessageID)
	str("parentAgent", d.ParentAgent)
	str("sessionID", d.SessionID)
	str("agent", d.Agent)
	str("model", d.Model)
	str("prompt", d.Prompt)
	num("timeoutMs", d.Timeout.Milliseconds())
	b = append(b, `,"status":`...)
	b = AppendJSONString(b, string(d.State), true)
	tm("createdAt", d.CreatedAt)
	tm("startedAt", d.StartedAt)
	tm("completedAt", d.CompletedAt)
	tm("lastUpdateAt", d.LastUpdateAt)
	tm("lastHeartbeatAt", d.LastHeartbeatAt)
	tm("timeoutAt", d.TimeoutAt)
	str("progress", d.Progress)
	str("result", d.Result)
	str("error", d.Error)
	str("title", d.Title)
	str("description", d.Description)
	tm("persistedAt", d.PersistedAt)
	str("artifactPath", d.ArtifactPath)
	num("artifactSize", d.ArtifactSize)
	if d.ArtifactHash != 0 || d.ArtifactPath != "" {
		b = append(b, `,"artifactHash":"`...)
		h := strconv.FormatUint(d.ArtifactHash, 16)
		for range 16 - len(h) {
			b = append(b, '0')
		}
		b = append(append(b, h...), '"')
	}
	tm("notifiedAt", d.NotifiedAt)
	tm("readAt", d.ReadAt)
	num("rejected", int64(d.Rejected))
	b = append(b, `,"version":`...)
	b = strconv.AppendUint(b, d.Version, 10)
	str("owner", d.Owner)
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONTime appends t in TimeLayout, as FormatTime and the JSON form
// show it, without parsing the layout on every call.
func appendJSONTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	hour, min, sec := t.Clock()
	if year < 0 || year > 9999 {
		return t.AppendFormat(b, TimeLayout)
	}
	two := func(b []byte, v int) []byte { return append(b, byte('0'+v/10), byte('0'+v%10)) }
	b = two(two(b, year/100), year%100)
	b = two(append(b, '-'), int(month))
	b = two(append(b, '-'), day)
	b = two(append(b, 'T'), hour)
	b = two(append(b, ':'), min)
	b = two(append(b, ':'), sec)
	ms := t.Nanosecond() / 1e6
	return append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}

// AppendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it: invalid UTF-8 becomes U+FFFD, U+2028 and U+2029 are
// escaped, and so are <, > and & when escapeHTML is set.
func AppendJSONString(b []byte, s string, escapeHTML bool) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && (!escapeHTML || (c != '<' && c != '>' && c != '&')) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// unmarshalJSONFast decodes into j, as json.Unmarshal would, what
// AppendJSON writes: one object whose keys are among delegationJSON's,
// each written without escapes and given once, whose values are strings,
// or integers for the integer fields. It reports false for anything else
// (another key, a key twice, a null, a number with a fraction...), which
// the caller leaves to json.Unmarshal, having cleared j. A client decodes
// a record per answer: reflection made that most of its CPU time.
func unmarshalJSONFast(b []byte, j *delegationJSON) bool {
	var seen uint32 // a bit per field
	return WalkPlainObject(b, func(key []byte, i int) (int, bool) {
		bit, field := j.field(key)
		if field == nil || seen&bit != 0 {
			return i, false
		}
		seen |= bit
		var ok bool
		switch f := field.(type) {
		case *string:
			*f, i, ok = jsonStringAt(b, i)
		case *int64:
			*f, i, ok = jsonIntAt(b, i)
		case *int:
			var v int64
			v, i, ok = jsonIntAt(b, i)
			*f = int(v)
			ok = ok && int64(*f) == v
		case *uint64:
			var neg bool
			neg, *f, i, ok = jsonNumberAt(b, i)
			ok = ok && !neg // json.Unmarshal refuses even -0 here
		}
		return i, ok
	})
}

// WalkPlainObject walks b as one JSON object, with nothing but whitespace
// around it, whose keys are ASCII written without escapes. For each
// member it calls value with the key and the index of the value, which
// returns the index after the value, or false to stop. It reports whether
// b is such an object and value took every member: what a decoder's short
// way needs, the values' syntax being value's to check.
func WalkPlainObject(b []byte, value func(key []byte, i int) (int, bool)) bool {
	i := skipJSONSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return false
	}
	i = skipJSONSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipJSONSpace(b, i+1) == len(b)
	}
	for {
		if i == len(b) || b[i] != '"' {
			return false
		}
		k := i + 1
		e := k
		for e < len(b) && b[e] != '"' && b[e] != '\\' && b[e] >= 0x20 && b[e] < utf8.RuneSelf {
			e++
		}
		if e == len(b) || b[e] != '"' {
			return false
		}
		i = skipJSONSpace(b, e+1)
		if i == len(b) || b[i] != ':' {
			return false
		}
		var ok bool
		if i, ok = value(b[k:e], skipJSONSpace(b, i+1)); !ok {
			return false
		}
		i = skipJSONSpace(b, i)
		switch {
		case i == len(b):
			return false
		case b[i] == '}':
			return skipJSONSpace(b, i+1) == len(b)
		case b[i] != ',':
			return false
		}
		i = skipJSONSpace(b, i+1)
	}
}

// field returns the field of j whose JSON key is key, and its bit in a
// set of keys; nil for a key that is not one.
func (j *delegationJSON) field(key []byte) (uint32, any) {
	switch string(key) {
	case "id":
		return 1 << 0, &j.ID
	case "projectId":
		return 1 << 1, &j.ProjectID
	case "rootSessionID":
		return 1 << 2, &j.RootSessionID
	case "parentSessionID":
		return 1 << 3, &j.ParentSessionID
	case "parentMessageID":
		return 1 << 4, &j.ParentMessageID
	case "parentAgent":
		return 1 << 5, &j.ParentAgent
	case "sessionID":
		return 1 << 6, &j.SessionID
	case "agent":
		return 1 << 7, &j.Agent
	case "model":
		return 1 << 8, &j.Model
	case "prompt":
		return 1 << 9, &j.Prompt
	case "timeoutMs":
		return 1 << 10, &j.TimeoutMs
	case "status":
		return 1 << 11, (*string)(&j.Status)
	case "createdAt":
		return 1 << 12, &j.CreatedAt
	case "startedAt":
		return 1 << 13, &j.StartedAt
	case "completedAt":
		return 1 << 14, &j.CompletedAt
	case "lastUpdateAt":
		return 1 << 15, &j.LastUpdateAt
	case "lastHeartbeatAt":
		return 1 << 16, &j.LastHeartbeatAt
	case "timeoutAt":
		return 1 << 17, &j.TimeoutAt
	case "progress":
		return 1 << 18, &j.Progress
	case "result":
		return 1 << 19, &j.Result
	case "error":
		return 1 << 20, &j.Error
	case "title":
		return 1 << 21, &j.Title
	case "description":
		return 1 << 22, &j.Description
	case "persistedAt":
		return 1 << 23, &j.PersistedAt
	case "artifactPath":
		return 1 << 24, &j.ArtifactPath
	case "artifactSize":
		return 1 << 25, &j.ArtifactSize
	case "artifactHash":
		return 1 << 26, &j.ArtifactHash
	case "notifiedAt":
		return 1 << 27, &j.NotifiedAt
	case "readAt":
		return 1 << 28, &j.ReadAt
	case "rejected":
		return 1 << 29, &j.Rejected
	case "version":
		return 1 << 30, &j.Version
	case "owner":
		return 1 << 31, &j.Owner
	}
	return 0, nil
}

// jsonStringAt decodes the JSON string at b[i] and returns the index after
// it. A string with escapes, or with bytes that are not valid UTF-8, is
// decoded by json.Unmarshal, which knows every rule for them.
func jsonStringAt(b []byte, i int) (string, int, bool) {
	if i == len(b) || b[i] != '"' {
		return "", i, false
	}
	plain, ascii := true, true
	e := i + 1
	for ; e < len(b) && b[e] != '"'; e++ {
		switch c := b[e]; {
		case c == '\\':
			plain = false
			e++ // the escaped byte, perhaps a quote
		case c < 0x20:
			return "", i, false // not allowed in a JSON string
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	if e >= len(b) {
		return "", i, false
	}
	if plain && (ascii || utf8.Valid(b[i+1:e])) {
		return string(b[i+1 : e]), e + 1, true
	}
	var s string
	if json.Unmarshal(b[i:e+1], &s) != nil {
		return "", i, false
	}
	return s, e + 1, true
}

// jsonIntAt decodes the JSON integer at b[i] and returns the index after
// it; false for a value out of int64's range.
func jsonIntAt(b []byte, i int) (int64, int, bool) {
	neg, v, e, ok := jsonNumberAt(b, i)
	switch {
	case !ok, neg && v > 1<<63, !neg && v > math.MaxInt64:
		return 0, i, false
	case neg:
		return -int64(v), e, true
	}
	return int64(v), e, true
}

// jsonNumberAt decodes the JSON integer at b[i] (no fraction, no exponent,
// its magnitude within uint64) as its sign and magnitude, and returns the
// index after it.
func jsonNumberAt(b []byte, i int) (neg bool, v uint64, end int, ok bool) {
	neg = i < len(b) && b[i] == '-'
	start := i
	if neg {
		start++
	}
	e := start
	for ; e < len(b) && b[e] >= '0' && b[e] <= '9'; e++ {
		d := uint64(b[e] - '0')
		if v > (math.MaxUint64-d)/10 {
			return false, 0, i, false
		}
		v = v*10 + d
	}
	switch {
	case e == start, b[start] == '0' && e > start+1: // no digits, or a leading zero
		return false, 0, i, false
	case e < len(b) && (b[e] == '.' || b[e] == 'e' || b[e] == 'E'):
		return false, 0, i, false
	}
	return neg, v, e, true
}

// skipJSONSpace returns the index of the first byte at or after i that is
// not JSON whitespace.
func skipJSONSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
