package fsm

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// history is a full life: every kind at least once.
func history() []Event {
	reg := regCmd()
	reg.Timeout = 10 * time.Minute
	reg.SessionID = "ses_child"
	return []Event{
		reg,
		{Kind: KindStarted, ID: testID, At: at(1)},
		{Kind: KindProgressed, ID: testID, At: at(2), Message: "half way"},
		{Kind: KindProgressed, ID: testID, At: at(3), Message: "almost"},
		{Kind: KindCompleted, ID: testID, At: at(4), Result: "# Found it\nin eventlog", Title: "Found it", Description: "The results go to the event log."},
		{Kind: KindRejected, ID: testID, At: at(5), Refused: KindProgressed, RefusedState: Complete, Message: "late"},
		{Kind: KindPersisted, ID: testID, At: at(6), ArtifactPath: "/data/p/ses_root/elegant-blue-tiger.md", ArtifactSize: 321, ArtifactHash: 0xfeedfacecafebeef},
		{Kind: KindNotificationFailed, ID: testID, At: at(7), NotificationID: "n1", Error: "socket closed"},
		{Kind: KindNotified, ID: testID, At: at(8), NotificationID: "n1"},
		{Kind: KindNotified, ID: testID, At: at(9), NotificationID: "n1"},
		{Kind: KindAllCompleteDue, ID: testID, At: at(10), Registration: Registration{
			ParentSessionID: "ses_parent",
		}, Cycle: 1},
		{Kind: KindAllCompleteNotified, ID: testID, At: at(11), Registration: Registration{
			ParentSessionID: "ses_parent",
		}, Cycle: 1},
		{Kind: KindRead, ID: testID, At: at(12)},
		{Kind: Kind(999), ID: testID, At: at(13)}, // from a later version
	}
}

func TestEvolveFullHistory(t *testing.T) {
	evs := history()
	d := Fold(evs...)
	want := Delegation{
		ID: testID,
		Registration: Registration{
			ProjectID: "0123456789abcdef", RootSessionID: "ses_root", ParentSessionID: "ses_parent",
			ParentMessageID: "msg_01", ParentAgent: "build", SessionID: "ses_child", Agent: "explore",
			Model: "anthropic/claude-haiku", Prompt: "find where the results go",
			Timeout: 10 * time.Minute,
		},
		State:           Complete,
		CreatedAt:       t0,
		StartedAt:       at(1),
		CompletedAt:     at(4),
		LastUpdateAt:    at(3),
		LastHeartbeatAt: at(3),
		TimeoutAt:       t0.Add(10 * time.Minute),
		Progress:        "almost",
		Result:          "# Found it\nin eventlog",
		Title:           "Found it",
		Description:     "The results go to the event log.",
		PersistedAt:     at(6),
		ArtifactPath:    "/data/p/ses_root/elegant-blue-tiger.md",
		ArtifactSize:    321,
		ArtifactHash:    0xfeedfacecafebeef,
		NotifiedAt:      at(8),
		ReadAt:          at(12),
		Rejected:        1,
		Version:         uint64(len(evs)),
	}
	if d != want {
		t.Errorf("fold:\n got %+v\nwant %+v", d, want)
	}
	if again := Fold(evs...); again != d {
		t.Error("folding the same events twice differs")
	}
	// through the codec, as a replay does
	var r Delegation
	for _, e := range evs {
		got, err := UnmarshalPayload(e.Kind, e.ID, e.At, e.MarshalPayload())
		if err != nil {
			t.Fatalf("%s: %v", e.Kind, err)
		}
		r = Evolve(r, got)
	}
	if r != d {
		t.Errorf("replay through the codec:\n got %+v\nwant %+v", r, d)
	}
}

func TestEvolveVersionCountsEveryEvent(t *testing.T) {
	var d Delegation
	for i, e := range history() {
		d = Evolve(d, e)
		if d.Version != uint64(i+1) {
			t.Fatalf("after %d events (%s) version = %d", i+1, e.Kind, d.Version)
		}
	}
}

func TestEvolveTerminalIsFinal(t *testing.T) {
	d := Fold(history()[:5]...) // completed
	before := d
	for _, e := range []Event{
		{Kind: KindStarted, ID: testID, At: at(20), Registration: Registration{SessionID: "ses_other"}},
		{Kind: KindProgressed, ID: testID, At: at(20), Message: "late"},
		{Kind: KindFailed, ID: testID, At: at(20), Error: "late"},
		{Kind: KindCancelled, ID: testID, At: at(20), Reason: "late"},
		{Kind: KindTimedOut, ID: testID, At: at(20), Error: "late"},
		{Kind: KindCompleted, ID: testID, At: at(20), Result: "late"},
		{Kind: KindImported, ID: testID, At: at(20), Status: Error, Result: "late"},
		regCmd(),
	} {
		d = Evolve(d, e)
	}
	if d.Version != before.Version+8 {
		t.Errorf("version = %d, want %d", d.Version, before.Version+8)
	}
	d.Version = before.Version
	if d != before {
		t.Errorf("late lifecycle events changed a terminal record:\n got %+v\nwant %+v", d, before)
	}
}

func TestEvolveTotal(t *testing.T) {
	// any event on any record: no panic, version always moves
	records := []Delegation{{}, Fold(history()[:1]...), Fold(history()...)}
	for _, d := range records {
		for k := Kind(0); k < 40; k++ {
			next := Evolve(d, Event{Kind: k, At: at(1), Status: "weird", RefusedState: "odd"})
			if next.Version != d.Version+1 {
				t.Errorf("kind %d: version %d → %d", k, d.Version, next.Version)
			}
		}
	}
}

func TestEvolveCancelledAndTimedOut(t *testing.T) {
	d := Fold(history()[:3]...)
	c := Evolve(d, Event{Kind: KindCancelled, ID: testID, At: at(9), Reason: "user asked"})
	if c.State != Cancelled || c.Error != "user asked" || !c.CompletedAt.Equal(at(9)) {
		t.Errorf("cancelled: %+v", c)
	}
	to := Evolve(d, Event{Kind: KindTimedOut, ID: testID, At: at(9), Error: "Delegation timed out after 600s"})
	if to.State != Timeout || to.Error != "Delegation timed out after 600s" || to.Progress != "half way" {
		t.Errorf("timed out: %+v", to)
	}
}

func TestEvolveImported(t *testing.T) {
	imp := Event{
		Kind:         KindImported,
		ID:           "old-red-fox",
		At:           t0,
		Registration: Registration{RootSessionID: "ses_root", Agent: "explore"},
		Status:       Timeout,
		Title:        "Old",
		Description:  "from disk",
		Result:       "text",
		ArtifactPath: "/x/old-red-fox.md",
	}
	d := Fold(imp)
	if d.ID != "old-red-fox" || d.State != Timeout || d.Title != "Old" || d.Result != "text" || d.Agent != "explore" ||
		!d.CompletedAt.Equal(t0) || !d.CreatedAt.Equal(t0) || d.ArtifactPath != "/x/old-red-fox.md" || d.Version != 1 {
		t.Errorf("imported: %+v", d)
	}
	// The adopted file is the artifact: persisted with the event's size and hash.
	if !d.PersistedAt.Equal(t0) || d.ArtifactSize != 0 || d.ArtifactHash != 0 || !d.NotifiedAt.IsZero() || d.Unread() {
		t.Errorf("imported persistence: %+v", d)
	}
	withFile := imp
	withFile.ArtifactSize, withFile.ArtifactHash = 220, 0x0302e5f06c908735
	if d := Fold(withFile); d.ArtifactSize != 220 || d.ArtifactHash != 0x0302e5f06c908735 || !d.PersistedAt.Equal(t0) {
		t.Errorf("imported with size and hash: %+v", d)
	}
	noFile := imp
	noFile.ArtifactPath = ""
	if d := Fold(noFile); !d.PersistedAt.IsZero() {
		t.Errorf("imported without a file is persisted: %+v", d)
	}
	for _, st := range []State{"", Running, "bogus"} {
		imp.Status = st
		if d := Fold(imp); d.State != Complete {
			t.Errorf("imported status %q → %s, want complete (the plugin's rule)", st, d.State)
		}
	}
}

func TestResultText(t *testing.T) {
	tests := []struct {
		d    Delegation
		want string
	}{
		{Delegation{State: Registered, Result: "x"}, ""},
		{Delegation{State: Running, Progress: "x"}, ""},
		{Delegation{State: Complete, Result: "the answer\n"}, "the answer\n"},
		{Delegation{State: Complete}, ""},
		{Delegation{State: Error, Error: "boom"}, "Error: boom"},
		{Delegation{State: Error}, "Error: Delegation failed."},
		{Delegation{State: Error, Error: "  \n"}, "Error: Delegation failed."},
		{Delegation{State: Cancelled, Error: "user asked"}, "Delegation was cancelled before completion."},
		{Delegation{State: Timeout, Progress: "partial output"}, "partial output\n\n[TIMEOUT REACHED]"},
		{Delegation{State: Timeout}, "\n\n[TIMEOUT REACHED]"},
	}
	for _, tt := range tests {
		if got := tt.d.ResultText(); got != tt.want {
			t.Errorf("%s: ResultText() = %q, want %q", tt.d.State, got, tt.want)
		}
	}
}

func TestTimedOutKeepsPartialOutput(t *testing.T) {
	d := inState(t, Running)
	d = apply(t, &d, Event{Kind: KindProgressed, ID: testID, At: at(3), Message: "found two of three"})
	evs, err := Decide(&d, Event{Kind: KindTimedOut, ID: testID, At: at(900)}, Config{})
	if err != nil || len(evs) != 1 {
		t.Fatal(evs, err)
	}
	if evs[0].Error != "Delegation timed out after 900s" {
		t.Errorf("default error = %q", evs[0].Error)
	}
	d = Evolve(d, evs[0])
	if got := d.ResultText(); got != "found two of three\n\n[TIMEOUT REACHED]" {
		t.Errorf("ResultText = %q", got)
	}
	if d.Title != "found two of three" || d.Description != "found two of three\n\n[TIMEOUT REACHED]" {
		t.Errorf("fallbacks = %q / %q", d.Title, d.Description)
	}

	// the number follows the delegation's own timeout
	cmd := regCmd()
	cmd.Timeout = 90 * time.Second
	d2 := apply(t, nil, cmd)
	evs, _ = Decide(&d2, Event{Kind: KindTimedOut, ID: testID, At: at(90)}, Config{DefaultTimeout: time.Hour})
	if evs[0].Error != "Delegation timed out after 90s" {
		t.Errorf("error with a 90s timeout = %q", evs[0].Error)
	}
	// an explicit error wins
	evs, _ = Decide(&d2, Event{Kind: KindTimedOut, ID: testID, At: at(90), Error: "deadline swept on startup"}, Config{})
	if evs[0].Error != "deadline swept on startup" {
		t.Errorf("explicit error = %q", evs[0].Error)
	}
}

func TestUnread(t *testing.T) {
	done := Fold(history()[:5]...)
	tests := []struct {
		name string
		d    Delegation
		want bool
	}{
		{"terminal, not notified", done, false},
		{"notified, never read", Evolve(done, Event{Kind: KindNotified, At: at(8)}), true},
		{"notified, read after completion", Evolve(Evolve(done, Event{Kind: KindNotified, At: at(8)}), Event{Kind: KindRead, At: at(9)}), false},
		{"read before completion", Delegation{State: Complete, CompletedAt: at(5), NotifiedAt: at(6), ReadAt: at(1)}, true},
		{"read at completion", Delegation{State: Complete, CompletedAt: at(5), NotifiedAt: at(6), ReadAt: at(5)}, false},
		{"active", Delegation{State: Running, NotifiedAt: at(6)}, false},
	}
	for _, tt := range tests {
		if got := tt.d.Unread(); got != tt.want {
			t.Errorf("%s: Unread() = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestDelegationJSON(t *testing.T) {
	evs := history()
	d := Fold(evs[:len(evs)-1]...)
	got, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"elegant-blue-tiger","projectId":"0123456789abcdef","rootSessionID":"ses_root",` +
		`"parentSessionID":"ses_parent","parentMessageID":"msg_01","parentAgent":"build","sessionID":"ses_child",` +
		`"agent":"explore","model":"anthropic/claude-haiku","prompt":"find where the results go","timeoutMs":600000,` +
		`"status":"complete","createdAt":"2026-11-21T10:38:45.282Z","startedAt":"2026-11-21T10:38:46.282Z",` +
		`"completedAt":"2026-11-21T10:38:49.282Z","lastUpdateAt":"2026-11-21T10:38:48.282Z",` +
		`"lastHeartbeatAt":"2026-11-21T10:38:48.282Z","timeoutAt":"2026-11-21T10:48:45.282Z","progress":"almost",` +
		`"result":"# Found it\nin eventlog","title":"Found it","description":"The results go to the event log.",` +
		`"persistedAt":"2026-11-21T10:38:51.282Z","artifactPath":"/data/p/ses_root/elegant-blue-tiger.md",` +
		`"artifactSize":321,"artifactHash":"feedfacecafebeef","notifiedAt":"2026-11-21T10:38:53.282Z",` +
		`"readAt":"2026-11-21T10:38:57.282Z","rejected":1,"version":13}`
	if string(got) != want {
		t.Errorf("json:\n got %s\nwant %s", got, want)
	}
	var back Delegation
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if back != d {
		t.Errorf("json round trip:\n got %+v\nwant %+v", back, d)
	}

	// a fresh registration: zero times and empty fields are left out
	regs, err := Decide(nil, regCmd(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := json.Marshal(Fold(regs...))
	wantFresh := `{"id":"elegant-blue-tiger","projectId":"0123456789abcdef","rootSessionID":"ses_root",` +
		`"parentSessionID":"ses_parent","parentMessageID":"msg_01","parentAgent":"build","agent":"explore",` +
		`"model":"anthropic/claude-haiku","prompt":"find where the results go","timeoutMs":900000,` +
		`"status":"registered","createdAt":"2026-11-21T10:38:45.282Z","lastUpdateAt":"2026-11-21T10:38:45.282Z",` +
		`"timeoutAt":"2026-11-21T10:53:45.282Z","version":1}`
	if string(fresh) != wantFresh {
		t.Errorf("json of a fresh record:\n got %s\nwant %s", fresh, wantFresh)
	}

	// times in another zone are written in UTC
	loc := time.FixedZone("X", 2*3600)
	z, _ := json.Marshal(Delegation{ID: testID, State: Running, CreatedAt: t0.In(loc)})
	if !strings.Contains(string(z), `"createdAt":"2026-11-21T10:38:45.282Z"`) {
		t.Errorf("zone not normalised: %s", z)
	}
	var bad Delegation
	if err := json.Unmarshal([]byte(`{"id":"a-b-c","createdAt":"yesterday"}`), &bad); err == nil {
		t.Error("bad time accepted")
	}
	if err := json.Unmarshal([]byte(`{"id":"a-b-c","artifactHash":"xyz"}`), &bad); err == nil {
		t.Error("bad hash accepted")
	}
}

func TestFallbackTitle(t *testing.T) {
	s30 := strings.Repeat("a", 30)
	tests := []struct {
		name, in, want string
	}{
		{"blank", " \n\t\n", ""},
		{"empty", "", ""},
		{"first line", "Hello\nworld", "Hello"},
		{"blank lines first", "\n   \n\t\r\n  Found it  \nmore", "Found it"},
		{"exactly 30", s30 + "\nnext", s30},
		{"31", s30 + "b", s30 + "..."},
		{"31 with trailing space at the cut", strings.Repeat("a", 29) + " bcd", strings.Repeat("a", 29) + "..."},
		{"leading spaces count", "    " + strings.Repeat("x", 27), strings.Repeat("x", 26) + "..."},
		{"30 multi-byte runes", strings.Repeat("é", 30), strings.Repeat("é", 30)},
		{"31 multi-byte runes", strings.Repeat("é", 31), strings.Repeat("é", 30) + "..."},
		{"emoji", strings.Repeat("🙂", 40), strings.Repeat("🙂", 30) + "..."},
		{"CRLF", "Title here\r\nbody", "Title here"},
	}
	for _, tt := range tests {
		got := FallbackTitle(tt.in)
		if got != tt.want {
			t.Errorf("%s: FallbackTitle(%q) = %q, want %q", tt.name, tt.in, got, tt.want)
		}
		if !utf8.ValidString(got) {
			t.Errorf("%s: split UTF-8: %q", tt.name, got)
		}
	}
}

func TestFallbackDescription(t *testing.T) {
	s150 := strings.Repeat("d", 150)
	tests := []struct {
		name, in, want string
	}{
		{"blank", "\n \n", ""},
		{"short", "  one line\n", "one line"},
		{"multi-line kept", "a\nb", "a\nb"},
		{"exactly 150", s150, s150},
		{"151", s150 + "e", s150 + "..."},
		{"151 ends in space at the cut", strings.Repeat("d", 149) + " e", strings.Repeat("d", 149) + "..."},
		{"150 multi-byte", strings.Repeat("ж", 150), strings.Repeat("ж", 150)},
		{"151 multi-byte", strings.Repeat("ж", 151), strings.Repeat("ж", 150) + "..."},
	}
	for _, tt := range tests {
		got := FallbackDescription(tt.in)
		if got != tt.want {
			t.Errorf("%s: FallbackDescription = %q, want %q", tt.name, got, tt.want)
		}
		if !utf8.ValidString(got) {
			t.Errorf("%s: split UTF-8: %q", tt.name, got)
		}
	}
}

func TestDecideFillsFallbacks(t *testing.T) {
	long := "\n\nThe cache was never invalidated because the key omitted the tenant\nDetails follow."
	tests := []struct {
		name              string
		cmd               Event
		wantTitle, wantDe string
	}{
		{"completed", Event{Kind: KindCompleted, Result: long},
			"The cache was never invalidate...", FallbackDescription(long)},
		{"completed, caller's title kept", Event{Kind: KindCompleted, Result: long, Title: "Cache bug"},
			"Cache bug", FallbackDescription(long)},
		{"completed, both given", Event{Kind: KindCompleted, Result: long, Title: "T", Description: "D"}, "T", "D"},
		{"completed, blank result", Event{Kind: KindCompleted, Result: "  \n"}, "", ""},
		{"failed", Event{Kind: KindFailed, Error: "model overloaded"}, "Error: model overloaded", "Error: model overloaded"},
		{"failed, no text", Event{Kind: KindFailed}, "Error: Delegation failed.", "Error: Delegation failed."},
		{"cancelled", Event{Kind: KindCancelled, Reason: "user"}, "Delegation was cancelled befor...", "Delegation was cancelled before completion."},
	}
	for _, tt := range tests {
		d := inState(t, Running)
		cmd := tt.cmd
		cmd.ID, cmd.At = testID, at(5)
		evs, err := Decide(&d, cmd, Config{})
		if err != nil || len(evs) != 1 {
			t.Fatalf("%s: %v, %v", tt.name, evs, err)
		}
		if evs[0].Title != tt.wantTitle || evs[0].Description != tt.wantDe {
			t.Errorf("%s: title %q, description %q; want %q, %q", tt.name, evs[0].Title, evs[0].Description, tt.wantTitle, tt.wantDe)
		}
	}
}
