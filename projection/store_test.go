package projection

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/delegations/delegations/fsm"
)

// clock is a test clock that moves forward one millisecond per reading.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 11, 21, 10, 38, 45, 282_000_000, time.UTC).UnixNano())
	return c
}

func (c *clock) Now() time.Time { return time.Unix(0, c.ns.Add(int64(time.Millisecond))).UTC() }

func openStore(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{Now: newClock().Now})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func registration() Registration {
	return Registration{
		ProjectID: "0123456789abcdef", RootSessionID: "ses_root", ParentSessionID: "ses_parent",
		Agent: "researcher", Prompt: "Find the flaky test",
	}
}

func register(t testing.TB, s *Store) fsm.Delegation {
	t.Helper()
	d, err := s.Register(context.Background(), registration())
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	return d
}

func kinds(t testing.TB, s *Store, id string) string {
	t.Helper()
	recs, err := s.Log().Stream(id)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		out = append(out, fsm.Kind(r.Kind).String())
	}
	return strings.Join(out, " ")
}

func TestLifecycleSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openStore(t, dir)
	d := register(t, s)
	if err := fsm.ValidateID(d.ID); err != nil || d.State != fsm.Registered || d.Version != 1 {
		t.Fatalf("registered %+v (%v)", d, err)
	}
	if d.TimeoutAt.Sub(d.CreatedAt) != 15*time.Minute {
		t.Fatalf("default deadline %v after creation", d.TimeoutAt.Sub(d.CreatedAt))
	}
	steps := []func() (fsm.Delegation, error){
		func() (fsm.Delegation, error) { return s.Start(ctx, d.ID, "ses_child") },
		func() (fsm.Delegation, error) { return s.Progress(ctx, d.ID, "half way") },
		func() (fsm.Delegation, error) { return s.Complete(ctx, d.ID, "All done.\nDetails.", "", "") },
	}
	for i, step := range steps {
		if _, err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	want, err := s.Get(d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want.State != fsm.Complete || want.Title != "All done." || want.Description != "All done.\nDetails." ||
		want.SessionID != "ses_child" || want.Progress != "half way" || want.Version != 5 || want.PersistedAt.IsZero() {
		t.Fatalf("after complete: %+v", want)
	}
	s.Close()

	s = openStore(t, dir)
	got, err := s.Get(d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after reopen:\n got %+v\nwant %+v", got, want)
	}
	if err := s.Log().Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLateCommandsAreRecordedAndRefused(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	d := register(t, s)
	if _, err := s.Complete(ctx, d.ID, "result", "", ""); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Get(d.ID)

	late := map[string]func() (fsm.Delegation, error){
		"progress":        func() (fsm.Delegation, error) { return s.Progress(ctx, d.ID, "late text") },
		"start":           func() (fsm.Delegation, error) { return s.Start(ctx, d.ID, "") },
		"fail":            func() (fsm.Delegation, error) { return s.Fail(ctx, d.ID, "boom") },
		"cancel":          func() (fsm.Delegation, error) { return s.Cancel(ctx, d.ID, "") },
		"timeout":         func() (fsm.Delegation, error) { return s.Timeout(ctx, d.ID) },
		"other complete":  func() (fsm.Delegation, error) { return s.Complete(ctx, d.ID, "another result", "", "") },
		"same complete":   nil, // below: idempotent
		"unknown id":      nil,
		"invalid id path": nil,
	}
	refused := 0
	for name, cmd := range late {
		if cmd == nil {
			continue
		}
		_, err := cmd()
		var te *fsm.TransitionError
		if !errors.Is(err, fsm.ErrTerminal) || !errors.As(err, &te) || te.State != fsm.Complete || te.ID != d.ID {
			t.Fatalf("%s after complete: err = %v, want a TransitionError from complete", name, err)
		}
		refused++
	}
	after, _ := s.Get(d.ID)
	if after.Rejected != refused || after.Version != before.Version+uint64(refused) {
		t.Fatalf("rejected %d, version %d; want %d, %d", after.Rejected, after.Version, refused, before.Version+uint64(refused))
	}
	after.Rejected, after.Version = before.Rejected, before.Version
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a refused command changed the record:\n%+v\n%+v", before, after)
	}

	// The same terminal command again is idempotent: no event, no error.
	v := after.Version + uint64(refused)
	if _, err := s.Complete(ctx, d.ID, "result", "", ""); err != nil {
		t.Fatalf("repeated complete: %v", err)
	}
	if got, _ := s.Get(d.ID); got.Version != v {
		t.Fatalf("repeated complete appended: version %d, want %d", got.Version, v)
	}

	if _, err := s.Progress(ctx, "unknown-grey-owl", "x"); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("progress on unknown id: %v", err)
	}
	last := s.Log().Last()
	for _, bad := range []string{"../../etc/passwd", "UPPER-case-id", "a-b", ""} {
		if _, err := s.Progress(ctx, bad, "x"); !errors.Is(err, fsm.ErrInvalid) {
			t.Fatalf("progress on %q: %v, want ErrInvalid", bad, err)
		}
	}
	if s.Log().Last() != last {
		t.Fatal("commands on unknown or invalid ids appended events")
	}
}

func TestTimeoutKeepsPartialOutput(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	d := register(t, s)
	if _, err := s.Progress(ctx, d.ID, "partial findings"); err != nil {
		t.Fatal(err)
	}
	got, err := s.Timeout(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != fsm.Timeout || got.Error != "Delegation timed out after 900s" ||
		got.ResultText() != "partial findings\n\n[TIMEOUT REACHED]" {
		t.Fatalf("timed out: state %s error %q result %q", got.State, got.Error, got.ResultText())
	}
	if k := kinds(t, s, d.ID); k != "registered started progressed timed_out persisted" {
		t.Fatalf("events: %s", k)
	}
}

func TestRegisterIdempotencyKey(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	r := registration()
	r.IdempotencyKey = "call-7"
	first, err := s.Register(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.Register(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if second.ID != first.ID || s.Log().Last() != 1 {
		t.Fatalf("retry created %q (log has %d events), want %q", second.ID, s.Log().Last(), first.ID)
	}
	r.IdempotencyKey = "call-8"
	third, err := s.Register(ctx, r)
	if err != nil || third.ID == first.ID {
		t.Fatalf("new key: %v, %q", err, third.ID)
	}
}

// TestIDCollisions uses a generator that always draws the same words: it
// yields two ids (the hour's adjective with them, and its own adjective),
// then nothing more; one, in the hour whose adjective is its own.
func TestIDCollisions(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   time.Time
		want int
	}{
		{"another hour's adjective", time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC), 2},
		{"the hour of its own adjective", time.Unix(0, 0).Add(15 * fsm.IDSlot), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.TempDir(), Options{
				IDs: fsm.NewIDGenerator(bytes.NewReader(bytes.Repeat([]byte{0xff}, 1<<16))),
				Now: func() time.Time { return tc.at },
			})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			registered := 0
			for ; registered < 3; registered++ {
				if _, err = s.Register(context.Background(), registration()); err != nil {
					break
				}
			}
			if !errors.Is(err, fsm.ErrIDSpaceExhausted) || registered != tc.want {
				t.Fatalf("register with a stuck generator: %v after %d delegations, want ErrIDSpaceExhausted after %d", err, registered, tc.want)
			}
			if s.Log().Last() != uint64(registered) {
				t.Fatalf("collisions appended events: the log holds %d, %d registered", s.Log().Last(), registered)
			}
		})
	}
}

func TestInvalidRegistrationChangesNothing(t *testing.T) {
	s := openStore(t, t.TempDir())
	for name, mutate := range map[string]func(*Registration){
		"traversal root":   func(r *Registration) { r.RootSessionID = "../../etc" },
		"slash in project": func(r *Registration) { r.ProjectID = "a/b" },
		"no agent":         func(r *Registration) { r.Agent = "" },
		"NUL in prompt":    func(r *Registration) { r.Prompt = "a\x00b" },
		"huge prompt":      func(r *Registration) { r.Prompt = strings.Repeat("x", fsm.MaxPromptLen+1) },
		"negative timeout": func(r *Registration) { r.Timeout = -time.Second },
		"absurd timeout":   func(r *Registration) { r.Timeout = 365 * 24 * time.Hour },
	} {
		r := registration()
		mutate(&r)
		if _, err := s.Register(context.Background(), r); !errors.Is(err, fsm.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if s.Log().Last() != 0 {
		t.Fatalf("invalid registrations appended %d events", s.Log().Last())
	}
}

// TestConcurrentCommandsRespectGuards races progress commands against one
// complete on the same delegation: whatever the interleaving, no progress
// lands after the completion, every command either succeeds or is refused
// as late, and the record matches the log.
func TestConcurrentCommandsRespectGuards(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	d := register(t, s)
	var (
		wg              sync.WaitGroup
		accepted, late  atomic.Int64
		completeErr     error
		completeStarted = make(chan struct{})
	)
	for w := range 8 {
		wg.Go(func() {
			for i := range 25 {
				if w == 0 && i == 10 {
					close(completeStarted)
				}
				_, err := s.Progress(ctx, d.ID, fmt.Sprintf("w%d-%d", w, i))
				switch {
				case err == nil:
					accepted.Add(1)
				case errors.Is(err, fsm.ErrTerminal):
					late.Add(1)
				default:
					t.Errorf("progress: %v", err)
				}
			}
		})
	}
	wg.Go(func() {
		<-completeStarted
		_, completeErr = s.Complete(ctx, d.ID, "done", "", "")
	})
	wg.Wait()
	if completeErr != nil {
		t.Fatal(completeErr)
	}
	recs, err := s.Log().Stream(d.ID)
	if err != nil {
		t.Fatal(err)
	}
	var progressed, rejected int
	completed := false
	for _, r := range recs {
		switch fsm.Kind(r.Kind) {
		case fsm.KindProgressed:
			if completed {
				t.Fatalf("progress at %d after the completion", r.Seq)
			}
			progressed++
		case fsm.KindCompleted:
			completed = true
		case fsm.KindRejected:
			rejected++
		}
	}
	if int64(progressed) != accepted.Load() || int64(rejected) != late.Load() || accepted.Load()+late.Load() != 200 {
		t.Fatalf("log: %d progressed, %d rejected; commands: %d accepted, %d late", progressed, rejected, accepted.Load(), late.Load())
	}
	got, _ := s.Get(d.ID)
	if got.State != fsm.Complete || got.Version != uint64(len(recs)) || got.Rejected != rejected {
		t.Fatalf("record %+v disagrees with its %d events", got, len(recs))
	}
	if err := s.Log().Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

// The sweeper's timeout of a delegation that ended meanwhile (or that a
// stale view still lists) appends nothing: a refused timeout would wake
// the sweeper again at once, forever.
func TestTimeoutIfOverdueSkipsEnded(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	s, err := Open(t.TempDir(), Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	d, err := s.Register(ctx, Registration{ProjectID: "p", RootSessionID: "r", ParentSessionID: "r", Agent: "a", Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Complete(ctx, d.ID, "done", "", ""); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	last := s.Log().Last()
	if timedOut, err := s.timeoutIfOverdue(ctx, d.ID); timedOut || err != nil {
		t.Fatalf("timed out an ended delegation: %v %v", timedOut, err)
	}
	if n, next, err := s.TimeoutOverdue(ctx); n != 0 || !next.IsZero() || err != nil {
		t.Fatalf("TimeoutOverdue: %d %v %v", n, next, err)
	}
	if s.Log().Last() != last {
		t.Fatalf("appended %d records for an ended delegation", s.Log().Last()-last)
	}
}

// TestActiveFilters lists active delegations by project, root and parent:
// a bridge reconciles only its own project's.
func TestActiveFilters(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	mk := func(project, root, parent string) string {
		r := registration()
		r.ProjectID, r.RootSessionID, r.ParentSessionID = project, root, parent
		d, err := s.Register(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		return d.ID
	}
	a := mk("aaaaaaaaaaaaaaaa", "ses_r1", "ses_p1")
	b := mk("bbbbbbbbbbbbbbbb", "ses_r1", "ses_p2")
	c := mk("aaaaaaaaaaaaaaaa", "ses_r2", "ses_p3")
	if _, err := s.Complete(ctx, c, "done", "", ""); err != nil {
		t.Fatal(err)
	}
	ids := func(f ActiveFilter) string {
		ds, err := s.Active(f)
		if err != nil {
			t.Fatalf("Active(%+v): %v", f, err)
		}
		var out []string
		for _, d := range ds {
			out = append(out, d.ID)
		}
		return strings.Join(out, " ")
	}
	for _, tc := range []struct {
		f    ActiveFilter
		want string
	}{
		{ActiveFilter{}, a + " " + b},
		{ActiveFilter{ProjectID: "aaaaaaaaaaaaaaaa"}, a},
		{ActiveFilter{ProjectID: "bbbbbbbbbbbbbbbb"}, b},
		{ActiveFilter{ProjectID: "aaaaaaaaaaaaaaaa", ParentSessionID: "ses_p2"}, ""},
		{ActiveFilter{RootSessionID: "ses_r1"}, a + " " + b},
	} {
		if got := ids(tc.f); got != tc.want {
			t.Errorf("Active(%+v) = %q, want %q", tc.f, got, tc.want)
		}
	}
	if _, err := s.Active(ActiveFilter{ProjectID: "../x"}); !errors.Is(err, fsm.ErrInvalid) {
		t.Errorf("Active with project ../x: %v, want ErrInvalid", err)
	}
}

// TestReadReplacesSymlinkedArtifact: an artifact replaced by a symlink
// (outside the data directory, or to another file inside it) is written
// again from the log, replacing the link; the link's target is neither
// read nor changed.
func TestReadReplacesSymlinkedArtifact(t *testing.T) {
	ctx := context.Background()
	for _, where := range []string{"outside", "inside"} {
		t.Run(where, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			d := register(t, s)
			d, err := s.Complete(ctx, d.ID, "the real result", "", "")
			if err != nil || d.PersistedAt.IsZero() {
				t.Fatalf("complete: %+v %v", d, err)
			}
			path := filepath.Join(dir, d.ArtifactPath)
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(t.TempDir(), "secret.md")
			if where == "inside" {
				target = filepath.Join(dir, "other.md")
			}
			if err := os.WriteFile(target, []byte("not the artifact"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, path); err != nil {
				t.Skipf("symlinks unavailable: %v", err)
			}
			res, err := s.Read(ctx, "ses_root", d.ID, 0)
			if err != nil || !res.Artifact || res.Text != string(want) {
				t.Fatalf("read: %+v %v", res, err)
			}
			fi, err := os.Lstat(path)
			if err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("the artifact is still not a regular file: %v %v", fi.Mode(), err)
			}
			if got, _ := os.ReadFile(path); string(got) != string(want) {
				t.Fatalf("artifact now %q", got)
			}
			if got, _ := os.ReadFile(target); string(got) != "not the artifact" {
				t.Fatalf("the link's target was changed: %q", got)
			}
		})
	}
}
