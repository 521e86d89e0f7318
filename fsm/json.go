package fsm

import (
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
