package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog/uncleared"
)

// sampleEvents has one event of every kind with every field its kind
// carries, plus extremes.
func sampleEvents() []Event {
	evs := history()
	evs = append(evs,
		Event{Kind: KindFailed, ID: testID, At: t0, Error: "boom", Title: "T", Description: "D"},
		Event{Kind: KindCancelled, ID: testID, At: t0, Reason: "user asked", Title: "T", Description: "D"},
		Event{Kind: KindTimedOut, ID: testID, At: t0, Error: "Delegation timed out after 900s"},
		Event{
			Kind:         KindImported,
			ID:           testID,
			At:           t0,
			Registration: Registration{RootSessionID: "r", Agent: "a"},
			Status:       Cancelled,
			Result:       "r",
			Title:        "t",
			Description:  "d",
			ArtifactPath: "/p.md",
		},
		Event{Kind: KindRejected, ID: testID, At: t0, Refused: Kind(math.MaxUint16), RefusedState: "future-state"},
		Event{Kind: KindPersisted, ID: testID, At: t0, ArtifactSize: -1, ArtifactHash: math.MaxUint64},
		Event{Kind: KindRegistered, ID: testID, At: t0, Registration: Registration{
			Timeout: -time.Nanosecond, Prompt: "ünïcødé 🙂",
		}},
		Event{Kind: KindRegistered, ID: testID, At: t0, Registration: Registration{Timeout: math.MaxInt64}},
		Event{Kind: KindRead, ID: testID, At: t0},
		Event{Kind: KindOwned, ID: testID, At: t0, Owner: "host-0123abcd"},
	)
	return evs
}

func TestPayloadRoundTripEveryKind(t *testing.T) {
	kinds := map[Kind]bool{}
	for _, e := range sampleEvents() {
		kinds[e.Kind] = true
		b := e.MarshalPayload()
		if b[0] != PayloadVersion {
			t.Fatalf("%s: first byte %d", e.Kind, b[0])
		}
		if len(b) != e.PayloadSize() || cap(b) != len(b) {
			t.Errorf("%s: PayloadSize %d, encoded %d (cap %d)", e.Kind, e.PayloadSize(), len(b), cap(b))
		}
		got, err := UnmarshalPayload(e.Kind, e.ID, e.At, b)
		if err != nil {
			t.Fatalf("%s: %v", e.Kind, err)
		}
		if got != e {
			t.Errorf("%s round trip:\n got %+v\nwant %+v", e.Kind, got, e)
		}
		if again := got.MarshalPayload(); !bytes.Equal(again, b) {
			t.Errorf("%s: re-encoding differs", e.Kind)
		}
		if app := e.AppendPayload([]byte("xy")); !bytes.Equal(app[2:], b) || string(app[:2]) != "xy" {
			t.Errorf("%s: AppendPayload differs from MarshalPayload", e.Kind)
		}
	}
	for k := firstKind; k <= lastKind; k++ {
		if !kinds[k] {
			t.Errorf("no sample of %s", k)
		}
	}
}

func TestPayloadLeavesOutKindIDAndTime(t *testing.T) {
	e := Event{Kind: KindRead, ID: testID, At: t0}
	if b := e.MarshalPayload(); !bytes.Equal(b, []byte{PayloadVersion}) {
		t.Errorf("read payload = %x, want just the version byte", b)
	}
	// pin the wire format of one event: a change here breaks stored logs
	e = Event{Kind: KindProgressed, Message: "hi", Registration: Registration{Timeout: -2}, Cycle: 300}
	want := []byte{1, tagTimeout, 1, 3, tagMessage, 2, 'h', 'i', tagCycle, 2, 0xac, 0x02}
	if b := e.MarshalPayload(); !bytes.Equal(b, want) {
		t.Errorf("wire format = %x, want %x", b, want)
	}
}

func TestPayloadDeterministic(t *testing.T) {
	for _, e := range sampleEvents() {
		a, b := e.MarshalPayload(), e.MarshalPayload()
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two encodings differ", e.Kind)
		}
	}
}

func field(tag uint64, v []byte) []byte {
	b := binary.AppendUvarint(nil, tag)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestPayloadSkipsUnknownTags(t *testing.T) {
	p := cat([]byte{1}, field(tagMessage, []byte("hi")), field(lastTag+1, []byte("future")), field(1000, []byte{0xff, 0}))
	e, err := UnmarshalPayload(KindProgressed, testID, t0, p)
	if err != nil || e.Message != "hi" {
		t.Fatalf("got %+v, %v", e, err)
	}
	// the unknown fields are dropped on re-encoding
	if !bytes.Equal(e.MarshalPayload(), cat([]byte{1}, field(tagMessage, []byte("hi")))) {
		t.Error("re-encoding kept unknown tags")
	}
}

func TestPayloadGarbage(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"version 0", []byte{0}},
		{"version 2", []byte{2, tagMessage, 1, 'x'}},
		{"truncated tag", []byte{1, 0x80}},
		{"overlong tag varint", append([]byte{1}, bytes.Repeat([]byte{0xff}, 11)...)},
		{"tag without length", []byte{1, tagMessage}},
		{"truncated length", []byte{1, tagMessage, 0x80}},
		{"length past end", []byte{1, tagMessage, 5, 'a', 'b'}},
		{"huge length", append([]byte{1, tagMessage}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)},
		{"tag zero", []byte{1, 0, 0}},
		{"descending tags", cat([]byte{1}, field(tagResult, []byte("a")), field(tagMessage, []byte("b")))},
		{"duplicate tag", cat([]byte{1}, field(tagMessage, []byte("a")), field(tagMessage, []byte("b")))},
		{"invalid UTF-8", cat([]byte{1}, field(tagMessage, []byte{0xff, 0xfe}))},
		{"invalid UTF-8 state", cat([]byte{1}, field(tagStatus, []byte{0xc3}))},
		{"empty integer", cat([]byte{1}, field(tagCycle, nil))},
		{"integer with trailing byte", cat([]byte{1}, field(tagCycle, []byte{1, 2}))},
		{"truncated integer", cat([]byte{1}, field(tagCycle, []byte{0x80}))},
		{"integer overflow", cat([]byte{1}, field(tagCycle, bytes.Repeat([]byte{0xff}, 10)))},
		{"refused kind over 16 bits", cat([]byte{1}, field(tagRefused, binary.AppendUvarint(nil, 1<<16)))},
	}
	for _, tt := range tests {
		_, err := UnmarshalPayload(KindProgressed, testID, t0, tt.in)
		if !errors.Is(err, ErrCorruptPayload) {
			t.Errorf("%s: err = %v, want ErrCorruptPayload", tt.name, err)
		}
	}
}

func TestUnmarshalPayloadAllocations(t *testing.T) {
	reg := history()[0]
	p := reg.MarshalPayload()
	n := testing.AllocsPerRun(100, func() {
		if _, err := UnmarshalPayload(reg.Kind, reg.ID, reg.At, p); err != nil {
			t.Fatal(err)
		}
	})
	if n > 1 {
		t.Errorf("decoding a registered payload allocates %v times, want 1 (one shared string)", n)
	}
	rej := Event{Kind: KindRejected, Refused: KindProgressed, RefusedState: Complete, Cycle: 7}
	p = rej.MarshalPayload()
	n = testing.AllocsPerRun(100, func() {
		if _, err := UnmarshalPayload(rej.Kind, testID, t0, p); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Errorf("decoding a payload without free text allocates %v times, want 0", n)
	}
}

func FuzzUnmarshalPayload(f *testing.F) {
	for _, e := range sampleEvents() {
		f.Add(uint16(e.Kind), e.MarshalPayload())
	}
	f.Add(uint16(KindProgressed), []byte{})
	f.Add(uint16(KindProgressed), []byte{1})
	f.Add(uint16(KindProgressed), []byte{2})
	f.Add(uint16(KindProgressed), []byte{1, 0x80})
	f.Add(uint16(KindProgressed), []byte{1, tagMessage, 5, 'a'})
	f.Add(uint16(KindProgressed), []byte{1, tagMessage, 0, tagResult, 1, 'x', 40, 1, 0})
	f.Add(uint16(0), []byte{1, tagCycle, 2, 0x80, 0x00})
	f.Add(uint16(KindRegistered), []byte{1, tagAgent, 1, 'a', tagPrompt, 1, 0xff})
	f.Fuzz(func(t *testing.T, kind uint16, data []byte) {
		e, err := UnmarshalPayload(Kind(kind), testID, t0, data)
		// Without the prompt: the same checks, the same event less its prompt.
		var short Event
		shortErr := UnmarshalPayloadTo(&short, Kind(kind), testID, t0, data, false)
		want := e
		want.Prompt = ""
		if (err == nil) != (shortErr == nil) || err == nil && short != want {
			t.Fatalf("without the prompt: %+v, %v; with it: %+v, %v", short, shortErr, e, err)
		}
		if err != nil {
			if !errors.Is(err, ErrCorruptPayload) {
				t.Fatalf("error does not wrap ErrCorruptPayload: %v", err)
			}
			return
		}
		b := e.MarshalPayload()
		if len(b) != e.PayloadSize() {
			t.Fatalf("PayloadSize %d, encoded %d", e.PayloadSize(), len(b))
		}
		e2, err := UnmarshalPayload(Kind(kind), testID, t0, b)
		if err != nil {
			t.Fatalf("re-encoded payload does not decode: %v", err)
		}
		if e2 != e {
			t.Fatalf("decode(encode(e)) != e:\n got %+v\nwant %+v", e2, e)
		}
		if !bytes.Equal(e2.MarshalPayload(), b) {
			t.Fatal("re-encoding is not stable")
		}
		// whatever decodes also folds without panicking
		_ = Evolve(Delegation{}, e)
	})
}

// TestMarshalLargePayload: a payload past uncleared.Large, whose memory is
// not cleared before it is written, is the same bytes as one appended to
// cleared memory, of its size, and decodes to the event.
func TestMarshalLargePayload(t *testing.T) {
	e := Event{Kind: KindCompleted, ID: "plain-white-yak", Result: strings.Repeat("résultat ", uncleared.Large/4), Title: "t", Description: "d"}
	got := e.MarshalPayload()
	if want := e.AppendPayload(nil); !bytes.Equal(got, want) || len(got) != e.PayloadSize() || cap(got) < len(got) {
		t.Fatalf("MarshalPayload: %d bytes, cap %d; AppendPayload gives %d, PayloadSize %d", len(got), cap(got), len(want), e.PayloadSize())
	}
	back, err := UnmarshalPayload(e.Kind, e.ID, e.At, got)
	if err != nil || back.Result != e.Result || back.Title != e.Title || back.Description != e.Description {
		t.Fatalf("decoded %d-byte result, %q, %q: %v", len(back.Result), back.Title, back.Description, err)
	}
}
