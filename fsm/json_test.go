package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// marshalJSONReflect is MarshalJSON through encoding/json: the reference
// AppendJSON is tested against.
func (d Delegation) marshalJSONReflect() ([]byte, error) {
	j := delegationJSON{
		ID: d.ID, RegistrationJSON: RegistrationJSON{
			ProjectID: d.ProjectID, RootSessionID: d.RootSessionID,
			ParentSessionID: d.ParentSessionID, ParentMessageID: d.ParentMessageID,
			ParentAgent: d.ParentAgent, SessionID: d.SessionID, Agent: d.Agent,
			Model: d.Model, Prompt: d.Prompt, TimeoutMs: d.Timeout.Milliseconds(),
		},
		Status:          d.State,
		CreatedAt:       FormatTime(d.CreatedAt),
		StartedAt:       FormatTime(d.StartedAt),
		CompletedAt:     FormatTime(d.CompletedAt),
		LastUpdateAt:    FormatTime(d.LastUpdateAt),
		LastHeartbeatAt: FormatTime(d.LastHeartbeatAt),
		TimeoutAt:       FormatTime(d.TimeoutAt),
		Progress:        d.Progress, Result: d.Result, Error: d.Error,
		Title: d.Title, Description: d.Description,
		PersistedAt:  FormatTime(d.PersistedAt),
		ArtifactPath: d.ArtifactPath, ArtifactSize: d.ArtifactSize,
		NotifiedAt: FormatTime(d.NotifiedAt), ReadAt: FormatTime(d.ReadAt),
		Rejected: d.Rejected, Version: d.Version, Owner: d.Owner,
	}
	if d.ArtifactHash != 0 || d.ArtifactPath != "" {
		j.ArtifactHash = fmt.Sprintf("%016x", d.ArtifactHash)
	}
	return json.Marshal(j)
}

// TestAppendJSON: AppendJSON writes the bytes encoding/json writes for the
// same record, texts with every kind of escape included.
func TestAppendJSON(t *testing.T) {
	odd := "a<b>&c \"q\" \\ \b\f\n\r\t\x01\x1f \u2028\u2029 \xff\xfe ü 日本"
	recs := append(sampleRecords(t), everyFieldRecord(t))
	d := everyFieldRecord(t)
	d.Prompt, d.Result, d.Title, d.ID, d.ArtifactHash = odd, odd, odd, odd, 0xabc
	recs = append(recs, d, Delegation{}, Delegation{ArtifactPath: "x"})
	for i, d := range recs {
		want, err := d.marshalJSONReflect()
		if err != nil {
			t.Fatal(err)
		}
		if got := d.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Errorf("record %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	f.Add("a<b>&\"\\\x00\u2028\xff", true)
	f.Fuzz(func(t *testing.T, s string, html bool) {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(html)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		if got := AppendJSONString(nil, s, html); !bytes.Equal(append(got, '\n'), want.Bytes()) {
			t.Fatalf("AppendJSONString(%q, %v) = %s, want %s", s, html, got, want.Bytes())
		}
	})
}

func TestAppendJSONTime(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(2026, 1, 2, 3, 4, 5, 6_789_000, time.UTC),
		time.Date(1999, 12, 31, 23, 59, 59, 999_999_999, time.FixedZone("x", 3600)),
		time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(5, 1, 1, 0, 0, 0, 1, time.UTC),
	} {
		want := tm.UTC().Format(TimeLayout)
		if got := string(appendJSONTime(nil, tm)); got != want {
			t.Errorf("appendJSONTime(%v) = %s, want %s", tm, got, want)
		}
		if got := FormatTime(tm); got != want {
			t.Errorf("FormatTime(%v) = %s, want %s", tm, got, want)
		}
	}
}

// jsonRecords are records in AppendJSON's form, texts with every kind of
// escape among them.
func jsonRecords(t testing.TB) [][]byte {
	odd := "a<b>&c \"q\" \\ \b\f\n\r\t\x01\x1f \u2028\u2029 \xff\xfe ü 日本 \U0001F600"
	d := everyFieldRecord(t)
	d.Prompt, d.Result, d.Title, d.ArtifactHash, d.Rejected, d.Version = odd, "ü 日本", "<title>", 0xabc, 3, 1<<62
	var out [][]byte
	for _, d := range append(sampleRecords(t), everyFieldRecord(t), d, Delegation{}) {
		out = append(out, d.AppendJSON(nil))
	}
	return out
}

// TestUnmarshalJSONFast: what AppendJSON writes takes the fast path, and
// comes back as json.Unmarshal decodes it.
func TestUnmarshalJSONFast(t *testing.T) {
	for i, b := range jsonRecords(t) {
		var fast, slow delegationJSON
		if !unmarshalJSONFast(b, &fast) {
			t.Errorf("record %d: the fast path refused %s", i, b)
		}
		if err := json.Unmarshal(b, &slow); err != nil {
			t.Fatal(err)
		}
		if fast != slow {
			t.Errorf("record %d: fast path\n %+v\njson.Unmarshal\n %+v", i, fast, slow)
		}
	}
}

// FuzzUnmarshalJSONFast: whatever the fast path decodes, json.Unmarshal
// accepts and decodes the same way.
func FuzzUnmarshalJSONFast(f *testing.F) {
	for _, b := range jsonRecords(f) {
		f.Add(b)
	}
	for _, s := range []string{
		`{"id":"a","id":"b"}`, `{"ID":"a"}`, `{"id":null}`, `{"version":1.0}`, `{"version":-1}`, `{"version":-0}`, `{"timeoutMs":-0}`,
		`{"version":01}`, `{"version":1e3}`, `{"rejected":9223372036854775808}`, `{"timeoutMs":-9223372036854775808}`,
		`{"id":"\ud800"}`, `{"id":"\ud83d\ude00"}`, "{\"id\":\"\xed\xa0\x80\"}", "{\"id\":\"a\tb\"}", `{"id":"a"} x`,
		` { "id" : "a" , "version" : 2 } `, `{}`, `null`, `{"id":"a",}`, `{"i\u0064":"a"}`, `{"other":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast, slow delegationJSON
		if !unmarshalJSONFast(b, &fast) {
			return
		}
		if err := json.Unmarshal(b, &slow); err != nil {
			t.Fatalf("the fast path decoded %q, which json.Unmarshal refuses: %v", b, err)
		}
		if fast != slow {
			t.Fatalf("%q: fast path\n %+v\njson.Unmarshal\n %+v", b, fast, slow)
		}
	})
}
