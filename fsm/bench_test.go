package fsm

import (
	"strings"
	"testing"
	"time"
)

// benchStream is a typical life in the log: register, start, 20 progress
// heartbeats with a growing text, complete, persist, notify, read.
type rec struct {
	kind    Kind
	at      time.Time
	payload []byte
}

func benchStream() []rec {
	reg := regCmd()
	reg.Timeout = 15 * time.Minute
	reg.Prompt = strings.Repeat("Investigate the failing test and report. ", 10)
	evs := []Event{reg, {Kind: KindStarted, At: at(1), Registration: Registration{SessionID: "ses_child_0123456789"}}}
	for i := range 20 {
		evs = append(evs, Event{Kind: KindProgressed, At: at(2 + i), Message: strings.Repeat("progress ", 10+i)})
	}
	evs = append(evs,
		Event{Kind: KindCompleted, At: at(30), Result: strings.Repeat("result line\n", 40), Title: "Found it", Description: "The flaky test races."},
		Event{Kind: KindPersisted, At: at(31), ArtifactPath: "/home/u/.local/share/opencode/delegations/p/ses_root/elegant-blue-tiger.md", ArtifactSize: 812, ArtifactHash: 0x1234567890abcdef},
		Event{Kind: KindNotified, At: at(32), NotificationID: "n-elegant-blue-tiger"},
		Event{Kind: KindRead, At: at(40)},
	)
	out := make([]rec, len(evs))
	for i, e := range evs {
		out[i] = rec{e.Kind, e.At, e.MarshalPayload()}
	}
	return out
}

// BenchmarkEvolve measures a replay step: decode one stored payload and
// fold it into the record. One op is one event.
func BenchmarkEvolve(b *testing.B) {
	stream := benchStream()
	b.ReportAllocs()
	var d Delegation
	i := 0
	for b.Loop() {
		r := &stream[i]
		e, err := UnmarshalPayload(r.kind, testID, r.at, r.payload)
		if err != nil {
			b.Fatal(err)
		}
		d = Evolve(d, e)
		if i++; i == len(stream) {
			i, d = 0, Delegation{}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkEvolveOnly is the fold without decoding: the baseline that shows
// what the codec costs.
func BenchmarkEvolveOnly(b *testing.B) {
	stream := benchStream()
	evs := make([]Event, len(stream))
	for i, r := range stream {
		evs[i], _ = UnmarshalPayload(r.kind, testID, r.at, r.payload)
	}
	b.ReportAllocs()
	var d Delegation
	i := 0
	for b.Loop() {
		d = Evolve(d, evs[i])
		if i++; i == len(evs) {
			i, d = 0, Delegation{}
		}
	}
}

// BenchmarkMarshalPayload measures encoding a progress event for append.
func BenchmarkMarshalPayload(b *testing.B) {
	e := Event{Kind: KindProgressed, ID: testID, At: t0, Message: strings.Repeat("progress ", 20)}
	b.ReportAllocs()
	for b.Loop() {
		_ = e.MarshalPayload()
	}
}

// BenchmarkDecide measures the guard on the hot command: progress on a
// running delegation.
func BenchmarkDecide(b *testing.B) {
	d := Fold(history()[:3]...)
	cmd := Event{Kind: KindProgressed, ID: testID, At: at(9), Message: "still going"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decide(&d, cmd, Config{}); err != nil {
			b.Fatal(err)
		}
	}
}
