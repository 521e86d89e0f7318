package replay_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/replay"
)

var t0 = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

// clock is a test clock that only moves when told to.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(t0.UnixNano())
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func storeOptions(c *clock) projection.Options {
	return projection.Options{Now: c.Now, IDs: fsm.NewIDGenerator(rand.NewChaCha8([32]byte{'r'}))}
}

func open(t testing.TB, dir string, c *clock) *projection.Store {
	t.Helper()
	s, err := projection.Open(dir, storeOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func registration(n int) projection.Registration {
	return projection.Registration{
		ProjectID: "0123456789abcdef", RootSessionID: fmt.Sprintf("ses_root%d", n%3),
		ParentSessionID: fmt.Sprintf("ses_parent%d", n%4), Agent: "researcher",
		Prompt: fmt.Sprintf("task %d", n), SessionID: fmt.Sprintf("ses_child%d", n),
	}
}

// populate drives n delegations through every kind of history: read,
// unread, waiting for the bridge, failed delivery, timed out with late
// events, cancelled, errored, running.
func populate(t testing.TB, s *projection.Store, c *clock, n int) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	must := func(_ any, err error) {
		t.Helper()
		if err != nil && !errors.Is(err, fsm.ErrTerminal) {
			t.Fatal(err)
		}
	}
	for i := range n {
		d, err := s.Register(ctx, registration(i))
		if err != nil {
			t.Fatal(err)
		}
		id := d.ID
		ids = append(ids, id)
		c.Advance(time.Second)
		must(s.Start(ctx, id, ""))
		must(s.Progress(ctx, id, fmt.Sprintf("step %d", i)))
		c.Advance(time.Second)
		switch i % 8 {
		case 0: // read
			must(s.Complete(ctx, id, fmt.Sprintf("result %d\nline two", i), "", ""))
			must(s.Ack(ctx, projection.TerminalNotificationID(id)))
			must(s.Read(ctx, registration(i).RootSessionID, id, 0))
		case 1: // unread
			must(s.Complete(ctx, id, fmt.Sprintf("result %d", i), "Custom title", "Custom description"))
			must(s.Ack(ctx, projection.TerminalNotificationID(id)))
		case 2: // waiting for the bridge, one failed delivery
			must(s.Fail(ctx, id, "boom"))
			must(s.AckFailed(ctx, projection.TerminalNotificationID(id), "busy"))
		case 3: // timed out, then late events
			must(s.Timeout(ctx, id))
			must(s.Progress(ctx, id, "late"))
			must(s.Complete(ctx, id, "late result", "", ""))
		case 4:
			must(s.Cancel(ctx, id, "not needed"))
			must(s.Ack(ctx, projection.TerminalNotificationID(id)))
		case 5, 6: // still running
		case 7:
			must(s.Complete(ctx, id, "", "", ""))
		}
	}
	return ids
}

// artifacts returns every artifact file under dir, by relative path.
func artifacts(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".md") {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// views returns every view entry: view \0 key → value.
func views(t testing.TB, l *eventlog.Log) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := l.View(func(tx *eventlog.Tx) error {
		return projection.InspectViews(tx, func(e projection.ViewEntry) error {
			out[e.View+"\x00"+string(e.Key)] = string(e.Value)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func codes(r *replay.Report) map[string]int {
	out := map[string]int{}
	for _, f := range r.Findings {
		out[f.Code]++
	}
	return out
}

// TestHealthyStore: a store that did everything right has no errors and
// no warnings but the late result, and its views match the log (verify).
func TestHealthyStore(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, c)
	defer s.Close()
	populate(t, s, c, 24)
	rep, err := replay.Run(context.Background(), s.Log(), s.Dir(), replay.Options{Now: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	got := codes(rep)
	want := map[string]int{
		replay.CodeUnread: 6, replay.CodeNotNotified: 9, replay.CodeLateEvents: 3, replay.CodeLateResult: 3,
		replay.CodeAllCompleteNotNotified: 1,
	}
	for code, n := range want {
		if got[code] != n {
			t.Errorf("%s: %d findings, want %d\n%s", code, got[code], n, rep)
		}
	}
	if rep.Errors != 0 || rep.Warnings != 3 || rep.ViewsChecked || rep.Delegations != 24 || rep.Events != s.Log().Last() {
		t.Errorf("report: %d errors, %d warnings, views %v, %d delegations, %d events\n%s",
			rep.Errors, rep.Warnings, rep.ViewsChecked, rep.Delegations, rep.Events, rep)
	}
	// The views are verify's to compare: they agree.
	v, err := replay.Verify(context.Background(), s.Log(), s.Dir(), replay.Options{Now: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Findings) != 0 || !v.ViewsChecked || v.Delegations != 24 || v.Artifacts != rep.Artifacts {
		t.Errorf("verify: views checked %v, %d delegations, %d artifacts (replay: %d)\n%s", v.ViewsChecked, v.Delegations, v.Artifacts, rep.Artifacts, v)
	}
	for _, f := range rep.Findings {
		if f.Diagnosis == "" || f.Delegation == "" && f.Parent == "" || len(f.Seqs) == 0 {
			t.Errorf("finding without diagnosis, delegation or records: %+v", f)
		}
	}
	// The JSON form: camelCase, one object.
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"findings":[`, `"delegationId":`, `"severity":"warning"`, `"viewsChecked":false`, `"now":"2026-11-21T`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
}

// TestRebuildAfterDeletingEverything deletes every artifact and every
// view; the rebuild brings back the same bytes.
func TestRebuildAfterDeletingEverything(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, c)
	populate(t, s, c, 40)
	wantFiles, wantViews := artifacts(t, dir), views(t, s.Log())
	if len(wantFiles) < 30 || len(wantViews) < 100 {
		t.Fatalf("populate made %d artifacts and %d view entries", len(wantFiles), len(wantViews))
	}
	s.Close()

	for rel := range wantFiles {
		if err := os.Remove(filepath.Join(dir, rel)); err != nil {
			t.Fatal(err)
		}
	}
	db, err := bolt.Open(filepath.Join(dir, projection.LogFile), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{"views", "checkpoints"} { // eventlog's buckets of views and checkpoints
			if err := tx.DeleteBucket([]byte(name)); err != nil {
				return err
			}
		}
		_, err := tx.CreateBucket([]byte("views"))
		return err
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	var progress []int
	res, err := replay.Rebuild(ctx, dir, storeOptions(c), replay.Options{Now: c.Now(), Progress: func(done, total int) {
		if done > total {
			t.Errorf("progress %d of %d", done, total)
		}
		progress = append(progress, done)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if before := codes(res.Before); before[replay.CodeArtifactMissing] != len(wantFiles) || before[replay.CodeViewsBehind] != 1 {
		t.Errorf("before the rebuild: %v\n%s", before, res.Before)
	}
	if res.After.Errors != 0 || codes(res.After)[replay.CodeArtifactMissing] != 0 || !res.After.ViewsChecked {
		t.Errorf("after the rebuild:\n%s", res.After)
	}
	if len(res.Fixed) != len(wantFiles)+1 {
		t.Errorf("fixed %d findings, want %d", len(res.Fixed), len(wantFiles)+1)
	}
	if len(progress) == 0 {
		t.Error("no progress reported")
	}

	gotFiles := artifacts(t, dir)
	if len(gotFiles) != len(wantFiles) {
		t.Errorf("%d artifacts after the rebuild, want %d", len(gotFiles), len(wantFiles))
	}
	for rel, want := range wantFiles {
		if !bytes.Equal(gotFiles[rel], want) {
			t.Errorf("%s differs after the rebuild:\n%q\n%q", rel, gotFiles[rel], want)
		}
	}
	s = open(t, dir, c)
	defer s.Close()
	gotViews := views(t, s.Log())
	if len(gotViews) != len(wantViews) {
		t.Errorf("%d view entries after the rebuild, want %d", len(gotViews), len(wantViews))
	}
	for k, v := range wantViews {
		if gotViews[k] != v {
			t.Errorf("view entry %q differs after the rebuild", k)
		}
	}
}

// TestCorruptRecord flips a byte of one record in the file: replay names
// its sequence number and the delegation, replays every other delegation,
// and the rebuild refuses with an error that says why.
func TestCorruptRecord(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, c)
	var needle uint64
	var owner string
	for i := range 30 {
		d, err := s.Register(ctx, registration(i))
		if err != nil {
			t.Fatal(err)
		}
		result := fmt.Sprintf("result-%02d", i)
		if i == 17 {
			result = "needle-in-the-log"
			owner = d.ID
		}
		if _, err := s.Complete(ctx, d.ID, result, "title", "description"); err != nil {
			t.Fatal(err)
		}
		if i == 17 {
			needle = s.Log().Last() - 1 // the completed event; persisted follows
		}
	}
	s.Close()
	path := filepath.Join(dir, projection.LogFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw = bytes.ReplaceAll(raw, []byte("needle-in-the-log"), []byte("Needle-in-the-log"))
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir, c)
	rep, err := replay.Run(ctx, s.Log(), s.Dir(), replay.Options{Now: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	var found *replay.Finding
	for i, f := range rep.Findings {
		if f.Code == replay.CodeCorruptRecord {
			found = &rep.Findings[i]
		}
	}
	if found == nil || len(found.Seqs) != 1 || found.Seqs[0] != needle || found.Delegation != owner || found.Severity != replay.SeverityError {
		t.Fatalf("corrupt finding %+v, want record %d of %s\n%s", found, needle, owner, rep)
	}
	if !strings.Contains(found.Diagnosis, "checksum") || !strings.Contains(found.Diagnosis, "complete (persisted)") {
		t.Errorf("diagnosis: %s", found.Diagnosis)
	}
	if rep.Delegations != 30 || rep.Events != s.Log().Last()-1 || rep.ViewsChecked {
		t.Errorf("replay did not go on past the damage: %d delegations, %d events, views %v", rep.Delegations, rep.Events, rep.ViewsChecked)
	}
	if len(rep.For(owner)) != 1 {
		t.Errorf("the damaged delegation has more findings than the damage: %+v", rep.For(owner))
	}
	v, err := replay.Verify(ctx, s.Log(), s.Dir(), replay.Options{Now: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if got := codes(v); got[replay.CodeCorruptRecord] != 1 || len(v.Findings) != 1 {
		t.Errorf("verify: %v\n%s", got, v)
	}
	tl, err := replay.ReadTimeline(ctx, s.Log(), owner)
	if err != nil || tl.Problem == "" || len(tl.Steps) != 1 {
		t.Errorf("timeline of the damaged delegation: %+v, %v", tl, err)
	}
	s.Close()

	if _, err := replay.Rebuild(ctx, dir, storeOptions(c), replay.Options{}); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("record %d", needle)) {
		t.Errorf("Rebuild over a damaged record: %v", err)
	}
}

// TestViewsBehind appends through the bare log, which has no projector:
// the views fall behind, and replay says so instead of comparing them.
func TestViewsBehind(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, c)
	populate(t, s, c, 3)
	s.Close()
	l, err := eventlog.Open(filepath.Join(dir, projection.LogFile), eventlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ev := fsm.Event{Kind: fsm.KindRegistered, At: c.Now(), Registration: fsm.Registration{
		RootSessionID: "r", ParentSessionID: "p", ProjectID: "p", Agent: "a",
		Timeout: time.Minute,
	}}
	if _, err := l.Append(ctx, eventlog.Append{Stream: "extra-blue-whale", Entries: []eventlog.Entry{{Kind: uint16(ev.Kind), Time: ev.At, Payload: ev.MarshalPayload()}}}); err != nil {
		t.Fatal(err)
	}
	rep, err := replay.Verify(ctx, l, dir, replay.Options{Now: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if codes(rep)[replay.CodeViewsBehind] != 1 || codes(rep)[replay.CodeViewMismatch] != 0 || !rep.Failed() {
		t.Errorf("views behind:\n%s", rep)
	}
}

// TestVerifyIndex damages the stream index directly: Verify reports it,
// and replay (which reads records in order) is not fooled.
func TestVerifyIndex(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, c)
	populate(t, s, c, 2)
	s.Close()
	db, err := bolt.Open(filepath.Join(dir, projection.LogFile), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket([]byte("versions")).Cursor().First()
		return tx.Bucket([]byte("versions")).Delete(k)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	// Read-only, as verify opens it: a writer refuses a damaged log.
	ro := storeOptions(c)
	ro.ReadOnly = true
	s, err = projection.Open(dir, ro)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rep, err := replay.Verify(ctx, s.Log(), s.Dir(), replay.Options{Now: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if codes(rep)[replay.CodeIndexCorrupt] == 0 || codes(rep)[replay.CodeUnread] != 0 {
		t.Errorf("verify after index damage:\n%s", rep)
	}
	if _, err := replay.Verify(ctx, s.Log(), s.Dir(), replay.Options{Until: replay.Point{Seq: 1}}); !errors.Is(err, fsm.ErrInvalid) {
		t.Errorf("Verify with Until: %v", err)
	}
}

// TestRunOnLiveStore replays and verifies while other goroutines keep
// appending: each verify compares at one consistent point, so the views
// never disagree, and replay reports nothing wrong.
func TestRunOnLiveStore(t *testing.T) {
	defer replay.SetRoundEntries(5)() // many rounds, each after the records committed since
	ctx := context.Background()
	c := newClock()
	s := open(t, t.TempDir(), c)
	defer s.Close()
	populate(t, s, c, 8)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				d, err := s.Register(ctx, registration(w*1000+i))
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Complete(ctx, d.ID, "r", "", ""); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for range 10 {
		run, err := replay.Run(ctx, s.Log(), s.Dir(), replay.Options{Now: c.Now()})
		if err != nil {
			t.Fatal(err)
		}
		// A terminal event and its persisted event are two appends, so a
		// replay may see a pending artifact; nothing else is wrong.
		for _, f := range run.Findings {
			if f.Severity == replay.SeverityError && f.Code != replay.CodeNotPersisted {
				t.Errorf("replay of a live store: %+v", f)
			}
		}
		rep, err := replay.Verify(ctx, s.Log(), s.Dir(), replay.Options{Now: c.Now()})
		if err != nil {
			t.Fatal(err)
		}
		// A terminal event and its persisted event are two appends, so a
		// replay may see a pending artifact; the views agree with it.
		for _, f := range rep.Findings {
			if f.Code == replay.CodeViewMismatch || f.Code == replay.CodeViewsBehind {
				t.Errorf("views disagree on a live store: %+v", f)
			}
		}
		if !rep.ViewsChecked {
			t.Error("views not compared")
		}
	}
	close(stop)
	wg.Wait()
}

func TestUntil(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	s := open(t, t.TempDir(), c)
	defer s.Close()
	d, err := s.Register(ctx, registration(1))
	if err != nil {
		t.Fatal(err)
	}
	c.Advance(20 * time.Minute)
	if _, err := s.Complete(ctx, d.ID, "late but done", "", ""); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		until  string
		events uint64
		state  fsm.State
		code   string // the one finding; "" for none
	}{
		{"1", 1, fsm.Registered, ""}, // measured at record 1's time: not overdue yet
		{"2026-11-21T10:16:00Z", 1, fsm.Registered, replay.CodeOverdue},
		{"2", 2, fsm.Complete, replay.CodeNotPersisted},
		{"3", 3, fsm.Complete, replay.CodeNotNotified},
	} {
		p, err := replay.ParsePoint(tc.until)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := replay.Run(ctx, s.Log(), s.Dir(), replay.Options{Until: p})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Events != tc.events || rep.States[tc.state] != 1 || rep.ViewsChecked {
			t.Errorf("until %s: %d events, states %v, views %v", tc.until, rep.Events, rep.States, rep.ViewsChecked)
		}
		if got := codes(rep); tc.code == "" && len(rep.Findings) != 0 || tc.code != "" && (got[tc.code] != 1 || len(rep.Findings) != 1) {
			t.Errorf("until %s: want only %q\n%s", tc.until, tc.code, rep)
		}
	}
}

func TestParsePoint(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want replay.Point
	}{
		{"12", replay.Point{Seq: 12}},
		{" 7 ", replay.Point{Seq: 7}},
		{"2026-11-21T10:38:45Z", replay.Point{Time: time.Date(2026, 11, 21, 10, 38, 45, 0, time.UTC)}},
		{"2026-11-21T11:38:45.5+01:00", replay.Point{Time: time.Date(2026, 11, 21, 10, 38, 45, 5e8, time.UTC)}},
	} {
		got, err := replay.ParsePoint(tc.in)
		if err != nil || got.Seq != tc.want.Seq || !got.Time.Equal(tc.want.Time) {
			t.Errorf("ParsePoint(%q) = %+v, %v", tc.in, got, err)
		}
		if again, err := replay.ParsePoint(got.String()); err != nil || again.Seq != got.Seq || !again.Time.Equal(got.Time) {
			t.Errorf("ParsePoint(String()) of %q = %+v, %v", tc.in, again, err)
		}
	}
	for _, bad := range []string{"", "0", "-1", "yesterday", "2026-11-21", "99999999999999999999999", "0001-01-01T00:00:00Z"} {
		if _, err := replay.ParsePoint(bad); !errors.Is(err, fsm.ErrInvalid) {
			t.Errorf("ParsePoint(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestTimeline(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	s := open(t, t.TempDir(), c)
	defer s.Close()
	ids := populate(t, s, c, 4)
	tl, err := replay.ReadTimeline(ctx, s.Log(), ids[3]) // timed out, then two late commands
	if err != nil {
		t.Fatal(err)
	}
	kinds := make([]string, len(tl.Steps))
	for i, st := range tl.Steps {
		kinds[i] = st.Kind
	}
	if got := strings.Join(kinds, " "); got != "registered started progressed timed_out persisted rejected rejected" {
		t.Errorf("steps: %s", got)
	}
	if tl.Refused != 2 || tl.Status != fsm.Timeout || tl.Steps[3].Gap != time.Second || tl.Steps[6].Elapsed != 2*time.Second {
		t.Errorf("timeline: %+v", tl)
	}
	text := tl.String()
	for _, want := range []string{"refused completed", "+1s", "timed_out", "(2 refused)"} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	b, err := json.Marshal(tl)
	if err != nil || !bytes.Contains(b, []byte(`"gapMs":1000`)) || !bytes.Contains(b, []byte(`"time":"2026-11-21T10:00:0`)) {
		t.Errorf("JSON: %s, %v", b, err)
	}
	if _, err := replay.ReadTimeline(ctx, s.Log(), "unknown-red-fox"); !errors.Is(err, fsm.ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	if _, err := replay.ReadTimeline(ctx, s.Log(), "../etc/passwd"); !errors.Is(err, fsm.ErrInvalid) {
		t.Errorf("bad id: %v", err)
	}
}

func TestRebuildWithoutLog(t *testing.T) {
	if _, err := replay.Rebuild(context.Background(), t.TempDir(), projection.Options{}, replay.Options{}); err == nil ||
		!strings.Contains(err.Error(), "no log") {
		t.Errorf("Rebuild of an empty directory: %v", err)
	}
}

// TestImportedNotReproducible: an imported file that is lost cannot be
// regenerated; replay says to restore it, and the rebuild leaves it alone.
func TestImportedArtifactLost(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	dir := t.TempDir()
	rel := filepath.Join("0123456789abcdef", "ses_legacy", "quiet-amber-owl.md")
	if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o700); err != nil {
		t.Fatal(err)
	}
	legacy := "# Old\n\nOld description\n\n**ID:** quiet-amber-owl\n**Agent:** explore\n**Status:** complete\n**Started:** 2026-10-01T09:00:00.000Z\n**Completed:** 2026-10-01T09:05:00.000Z\n\n---\n\nold result\n"
	if err := os.WriteFile(filepath.Join(dir, rel), []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, dir, c)
	if res, err := s.Import(ctx, dir, nil); err != nil || res.Imported != 1 {
		t.Fatalf("import: %+v, %v", res, err)
	}
	rep, err := replay.Run(ctx, s.Log(), dir, replay.Options{Now: c.Now()})
	if err != nil || len(rep.Findings) != 0 {
		t.Fatalf("after import: %v\n%s", err, rep)
	}
	s.Close()
	os.Remove(filepath.Join(dir, rel))
	res, err := replay.Rebuild(ctx, dir, storeOptions(c), replay.Options{Now: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	f := res.After.For("quiet-amber-owl")
	if len(f) != 1 || f[0].Code != replay.CodeArtifactMissing || !strings.Contains(f[0].Next, "backup") {
		t.Errorf("after the rebuild: %+v", f)
	}
	if _, err := os.Stat(filepath.Join(dir, rel)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the rebuild wrote a file the log cannot reproduce: %v", err)
	}
}

// TestMissingRecords deletes three records from the file: replay reports
// them as one run of damaged records and replays the rest.
func TestMissingRecords(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, c)
	populate(t, s, c, 6)
	last := s.Log().Last()
	s.Close()
	l := withoutRecords(t, dir, 10, 12)
	rep, err := replay.Run(ctx, l, dir, replay.Options{Now: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	var runs []replay.Finding
	for _, f := range rep.Findings {
		if f.Code == replay.CodeCorruptRecord {
			runs = append(runs, f)
		}
	}
	if len(runs) != 1 || fmt.Sprint(runs[0].Seqs) != "[10 11 12]" || !strings.Contains(runs[0].Diagnosis, "missing") {
		t.Fatalf("damaged runs: %+v", runs)
	}
	if rep.Events != last-3 || rep.Through != last {
		t.Errorf("replayed %d events through %d, want %d through %d", rep.Events, rep.Through, last-3, last)
	}
}

// withoutRecords deletes records first to last from the log of the closed
// store in dir, as a damaged file would lack them, and opens the log
// read-only (closed when the test ends).
func withoutRecords(t *testing.T, dir string, first, last uint64) *eventlog.Log {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, projection.LogFile), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for seq := first; seq <= last; seq++ {
			if err := tx.Bucket([]byte("events")).Delete(binary.BigEndian.AppendUint64(nil, seq)); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Open(filepath.Join(dir, projection.LogFile), eventlog.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func FuzzParsePoint(f *testing.F) {
	for _, s := range []string{"1", "18446744073709551615", "2026-11-21T10:38:45Z", "2026-11-21T10:38:45.123456789+14:00", "", "0", "T", "1-", "9:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := replay.ParsePoint(s)
		if err != nil {
			if !errors.Is(err, fsm.ErrInvalid) {
				t.Fatalf("error %v does not wrap fsm.ErrInvalid", err)
			}
			return
		}
		if p.IsZero() || (p.Seq != 0) == !p.Time.IsZero() {
			t.Fatalf("ParsePoint(%q) = %+v: want exactly one of a sequence number and a time", s, p)
		}
		again, err := replay.ParsePoint(p.String())
		if err != nil || again.Seq != p.Seq || !again.Time.Equal(p.Time) {
			t.Fatalf("ParsePoint(%q).String() = %q reads back as %+v, %v", s, p.String(), again, err)
		}
	})
}

// TestDiagnose: the findings about one delegation from its own stream are
// those of a replay of the whole log.
func TestDiagnose(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, c)
	defer s.Close()
	ids := populate(t, s, c, 16)
	c.Advance(48 * time.Hour) // every age past its threshold
	rep, err := replay.Run(ctx, s.Log(), dir, replay.Options{Now: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		got, err := replay.Diagnose(ctx, s.Log(), dir, id, replay.Options{Now: c.Now()})
		if err != nil {
			t.Fatal(err)
		}
		want := rep.For(id)
		if want == nil {
			want = []replay.Finding{}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", id, got, want)
		}
		for _, f := range got {
			seen[f.Code] = true
		}
	}
	for _, code := range []string{replay.CodeOverdue, replay.CodeNotNotified, replay.CodeUnread, replay.CodeLateResult, replay.CodeLateEvents} {
		if !seen[code] {
			t.Errorf("no %s finding: the test covers less than it should", code)
		}
	}
	if fs, err := replay.Diagnose(ctx, s.Log(), dir, "unknown-red-fox", replay.Options{}); err != nil || len(fs) != 0 {
		t.Errorf("unknown id: %v, %v", fs, err)
	}
}

// TestSettledDelegationsComeBack: replay drops a delegation once its
// lifecycle is settled (read) and reads it back from its stream when a
// later event of it comes: a refused late result, a late progress, a
// second read. Its findings are those Diagnose finds from its stream
// alone, and a damaged record of a settled delegation is still named.
func TestSettledDelegationsComeBack(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, c)
	var ids []string
	for i := range 6 {
		d, err := s.Register(ctx, registration(i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
		msg := fmt.Sprintf("step %d", i)
		if i == 5 {
			msg = "needle-in-the-log"
		}
		if _, err := s.Progress(ctx, d.ID, msg); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			_, err = s.Fail(ctx, d.ID, "gave up")
		} else {
			_, err = s.Complete(ctx, d.ID, fmt.Sprintf("result %d", i), "", "")
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Ack(ctx, projection.TerminalNotificationID(d.ID)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Read(ctx, registration(i).RootSessionID, d.ID, 0); err != nil {
			t.Fatal(err)
		}
	}
	c.Advance(time.Minute)
	// Later events of settled delegations, after others were registered.
	if _, err := s.Complete(ctx, ids[0], "a late result", "", ""); !errors.Is(err, fsm.ErrTerminal) {
		t.Fatalf("late completion: %v", err)
	}
	for _, id := range []string{ids[1], ids[5]} {
		if _, err := s.Progress(ctx, id, "late"); !errors.Is(err, fsm.ErrTerminal) {
			t.Fatalf("late progress: %v", err)
		}
	}
	if _, err := s.Read(ctx, registration(2).RootSessionID, ids[2], 0); err != nil {
		t.Fatal(err)
	}
	rep, err := replay.Run(ctx, s.Log(), dir, replay.Options{Now: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	got := codes(rep)
	// The parents' all-complete notifications were never acknowledged.
	if got[replay.CodeLateResult] != 1 || got[replay.CodeLateEvents] != 2 || len(rep.Findings) != 3+got[replay.CodeAllCompleteNotNotified] ||
		rep.Delegations != 6 || rep.States[fsm.Complete] != 5 || rep.States[fsm.Error] != 1 || rep.Artifacts != 6 {
		t.Errorf("findings %v, %d delegations, states %v, %d artifacts\n%s", got, rep.Delegations, rep.States, rep.Artifacts, rep)
	}
	// Only the three with refused commands are kept to the end.
	if kept, seen, err := replay.Kept(ctx, s.Log(), dir); err != nil || kept != 3 || seen != 6 {
		t.Errorf("the fold kept %d of %d delegations (%v), want 3 of 6", kept, seen, err)
	}
	for _, id := range ids {
		want, err := replay.Diagnose(ctx, s.Log(), dir, id, replay.Options{Now: c.Now()})
		if err != nil {
			t.Fatal(err)
		}
		if g := rep.For(id); len(g) != len(want) || len(g) > 0 && !reflect.DeepEqual(g, want) {
			t.Errorf("%s: replay %+v, diagnose %+v", id, g, want)
		}
	}
	s.Close()

	// Damage the progress event of the last one, settled long before its
	// late progress: replay names it as the owner of the damaged record,
	// and folds it again past that record when the late event comes.
	path := filepath.Join(dir, projection.LogFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.ReplaceAll(raw, []byte("needle-in-the-log"), []byte("Needle-in-the-log")), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Open(path, eventlog.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rep, err = replay.Run(ctx, l, dir, replay.Options{Now: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	fs := rep.For(ids[5])
	if len(fs) != 1 || fs[0].Code != replay.CodeCorruptRecord || !strings.Contains(fs[0].Diagnosis, "It belongs to "+ids[5]) || fs[0].Status != "" {
		t.Errorf("damaged record of a settled delegation: %+v\n%s", fs, rep)
	}
	if rep.Delegations != 6 || rep.States[fsm.Complete] != 5 || rep.States[fsm.Error] != 1 || len(rep.States) != 2 {
		t.Errorf("after the damage: %d delegations, states %v\n%s", rep.Delegations, rep.States, rep)
	}
}
