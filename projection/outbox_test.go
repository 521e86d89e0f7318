package projection

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection/artifact"
	"github.com/delegations/delegations/projection/clocktest"
)

func openManual(t *testing.T, dir string) (*Store, *clocktest.Clock) {
	t.Helper()
	c := clocktest.New(time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC))
	s, err := Open(dir, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, c
}

func dueIDs(t *testing.T, s *Store, parent string) string {
	t.Helper()
	ns, err := s.Notifications(parent)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range ns {
		ids = append(ids, n.ID)
	}
	return strings.Join(ids, " ")
}

func TestPersistNotifyReadUnread(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, clock := openManual(t, dir)
	d := register(t, s)
	other := register(t, s)
	clock.Advance(time.Second)
	done, err := s.Complete(ctx, d.ID, "The answer.", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if done.PersistedAt.IsZero() || done.ArtifactPath != filepath.Join("0123456789abcdef", "ses_root", d.ID+".md") {
		t.Fatalf("complete did not persist: %+v", done)
	}
	file, err := os.ReadFile(filepath.Join(dir, done.ArtifactPath))
	if err != nil || string(file) != string(artifact.Render(&done)) {
		t.Fatalf("artifact on disk %q (%v)", file, err)
	}
	ns := must(s.Notifications(""))(t)
	if len(ns) != 1 || ns[0].ID != "terminal:"+d.ID || ns[0].Text != artifact.TerminalNotification(&done, filepath.Join(dir, done.ArtifactPath), 1) {
		t.Fatalf("outbox after complete: %+v", ns)
	}
	if done.Unread() {
		t.Fatal("unread before the notification was delivered")
	}
	// Redelivered until acknowledged, then gone; a second ack is harmless.
	if got := dueIDs(t, s, "ses_parent"); got != "terminal:"+d.ID {
		t.Fatalf("second delivery: %q", got)
	}
	if res, err := s.Ack(ctx, "terminal:"+d.ID); err != nil || res.Already {
		t.Fatalf("ack: %+v %v", res, err)
	}
	if res, err := s.Ack(ctx, "terminal:"+d.ID); err != nil || !res.Already {
		t.Fatalf("second ack: %+v %v", res, err)
	}
	if got := dueIDs(t, s, ""); got != "" {
		t.Fatalf("outbox after ack: %q", got)
	}
	unread := must(s.List("ses_root", ListOptions{Unread: true}))(t)
	if len(unread) != 1 || unread[0].ID != d.ID {
		t.Fatalf("unread after notification: %+v", unread)
	}
	// An unread flag survives a restart.
	s.Close()
	s, _ = openManual(t, dir)
	res, err := s.Read(ctx, "ses_root", d.ID, 0)
	if err != nil || !res.Artifact || res.Text != string(file) {
		t.Fatalf("read: %+v %v", res, err)
	}
	if unread := must(s.List("ses_root", ListOptions{Unread: true}))(t); len(unread) != 0 {
		t.Fatalf("still unread after read: %+v", unread)
	}
	// Visibility is per root session.
	var nf *ReadNotFoundError
	if _, err := s.Read(ctx, "ses_other", d.ID, 0); !errors.As(err, &nf) || err.Error() != artifact.NotFoundReadText(d.ID) {
		t.Fatalf("read from another root: %v", err)
	}
	if _, err := s.Read(ctx, "ses_root", " ", 0); err == nil || !strings.Contains(err.Error(), artifact.ReadIDRequired) {
		t.Fatalf("blank id: %v", err)
	}
	// An active delegation with no wait gives the pending text, unrecorded.
	res, err = s.Read(ctx, "ses_root", other.ID, 0)
	if err != nil || res.Artifact || !strings.Contains(res.Text, "Status: registered") {
		t.Fatalf("read of an active delegation: %+v %v", res, err)
	}
	if k := kinds(t, s, d.ID); k != "registered completed persisted notified read" {
		t.Fatalf("events: %s", k)
	}
}

func TestAllCompleteCycles(t *testing.T) {
	ctx := context.Background()
	s, clock := openManual(t, t.TempDir())
	a, b := register(t, s), register(t, s)
	ackAll := func() {
		t.Helper()
		for _, n := range mustNotifications(t, s) {
			if n.Kind == KindTerminal {
				if _, err := s.Ack(ctx, n.ID); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	s.Complete(ctx, a.ID, "a", "", "")
	ackAll()
	clock.Advance(time.Second)
	if got := dueIDs(t, s, ""); got != "" {
		t.Fatalf("all-complete due while %s is active: %q", b.ID, got)
	}
	s.Fail(ctx, b.ID, "boom")
	if ns := mustNotifications(t, s); len(ns) != 1 || strings.Contains(ns[0].Text, "<remaining>") {
		t.Fatalf("last terminal notification of the cycle: %+v", ns)
	}
	ackAll()
	if got := dueIDs(t, s, ""); got != "" {
		t.Fatalf("all-complete due before the quiet period: %q", got)
	}
	clock.Advance(AllCompleteQuiet)
	if got := dueIDs(t, s, "ses_parent"); got != "all-complete:ses_parent:1" {
		t.Fatalf("after the quiet period: %q", got)
	}
	n := mustNotifications(t, s)[0]
	if n.Text != artifact.AllCompleteNotification("ses_parent", 1) {
		t.Fatalf("all-complete text %q", n.Text)
	}
	if _, err := s.Ack(ctx, n.ID); err != nil {
		t.Fatal(err)
	}
	if res, err := s.Ack(ctx, n.ID); err != nil || !res.Already {
		t.Fatalf("second ack of all-complete: %+v %v", res, err)
	}

	// Cycle 2 completes but its all-complete is not delivered before cycle
	// 3 starts: it is never sent.
	c := register(t, s)
	s.Complete(ctx, c.ID, "c", "", "")
	ackAll()
	clock.Advance(time.Second)
	if got := dueIDs(t, s, ""); got != "all-complete:ses_parent:2" {
		t.Fatalf("cycle 2: %q", got)
	}
	d := register(t, s)
	if got := dueIDs(t, s, ""); got != "" {
		t.Fatalf("a newer cycle did not suppress the older all-complete: %q", got)
	}
	if _, err := s.Ack(ctx, "all-complete:ses_parent:2"); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("ack of a suppressed all-complete: %v", err)
	}
	s.Complete(ctx, d.ID, "d", "", "")
	ackAll()
	clock.Advance(time.Second)
	if got := dueIDs(t, s, ""); got != "all-complete:ses_parent:3" {
		t.Fatalf("cycle 3: %q", got)
	}
}

func mustNotifications(t *testing.T, s *Store) []Notification {
	t.Helper()
	ns, err := s.Notifications("")
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func TestFailedDeliveryIsRedelivered(t *testing.T) {
	ctx := context.Background()
	s, _ := openManual(t, t.TempDir())
	d := register(t, s)
	s.Complete(ctx, d.ID, "x", "", "")
	nid := TerminalNotificationID(d.ID)
	for i := 1; i <= 2; i++ {
		if _, err := s.AckFailed(ctx, nid, "session busy"); err != nil {
			t.Fatal(err)
		}
		ns := mustNotifications(t, s)
		if len(ns) != 1 || ns[0].Failures != i || ns[0].LastError != "session busy" {
			t.Fatalf("after %d failures: %+v", i, ns)
		}
	}
	if _, err := s.Ack(ctx, nid); err != nil {
		t.Fatal(err)
	}
	if len(mustNotifications(t, s)) != 0 {
		t.Fatal("acknowledged notification still due")
	}
	for _, bad := range []string{"", "terminal:", "terminal:../x", "all-complete:p", "all-complete:p:0", "all-complete:../p:1", "other:x"} {
		if _, err := s.Ack(ctx, bad); !errors.Is(err, fsm.ErrInvalid) {
			t.Errorf("ack %q: %v, want ErrInvalid", bad, err)
		}
	}
}

// blockArtifacts makes artifact writes under the project fail by putting a
// file where the project directory goes; the returned func removes it.
func blockArtifacts(t *testing.T, dir string) func() {
	t.Helper()
	p := filepath.Join(dir, "0123456789abcdef")
	if err := os.WriteFile(p, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCrashBeforeArtifact: the terminal event is durable but the artifact
// could not be written (as after a crash between the two). Reading gives
// the terminal text and records nothing; the next open finishes the job
// with one persisted event and one notification.
func TestCrashBeforeArtifact(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, _ := openManual(t, dir)
	d := register(t, s)
	unblock := blockArtifacts(t, dir)
	got, err := s.Complete(ctx, d.ID, "kept result", "", "")
	if err != nil || got.State != fsm.Complete || !got.PersistedAt.IsZero() {
		t.Fatalf("complete with an unwritable artifact dir: %+v %v", got, err)
	}
	res, err := s.Read(ctx, "ses_root", d.ID, 0)
	if err != nil || res.Artifact || res.Text != artifact.PendingReadText(&got, filepath.Join(dir, "0123456789abcdef", "ses_root", d.ID+".md")) {
		t.Fatalf("read before persistence: %+v %v", res, err)
	}
	if len(mustNotifications(t, s)) != 0 {
		t.Fatal("notified before the artifact was persisted")
	}
	s.Close()
	unblock()

	s, _ = openManual(t, dir)
	checkPersistedOnce(t, s, dir, d.ID)
}

// TestCrashAfterArtifact: the artifact was written but the persisted event
// never made it. The next open rewrites the same bytes and records it once.
func TestCrashAfterArtifact(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, _ := openManual(t, dir)
	d := register(t, s)
	unblock := blockArtifacts(t, dir)
	got := must(s.Complete(ctx, d.ID, "kept result", "", ""))(t)
	s.Close()
	unblock()
	rel, _ := artifact.RelPath(got.ProjectID, got.RootSessionID, got.ID)
	if _, _, err := artifact.Write(dir, rel, artifact.Render(&got)); err != nil {
		t.Fatal(err)
	}
	s, _ = openManual(t, dir)
	checkPersistedOnce(t, s, dir, d.ID)
	s.Close()
	s, _ = openManual(t, dir)
	checkPersistedOnce(t, s, dir, d.ID)
}

func checkPersistedOnce(t *testing.T, s *Store, dir, id string) {
	t.Helper()
	if k := kinds(t, s, id); k != "registered completed persisted" {
		t.Fatalf("events after recovery: %s", k)
	}
	d := must(s.Get(id))(t)
	file, err := os.ReadFile(filepath.Join(dir, d.ArtifactPath))
	if err != nil || string(file) != string(artifact.Render(&d)) {
		t.Fatalf("artifact after recovery: %q %v", file, err)
	}
	if got := dueIDs(t, s, ""); got != "terminal:"+id {
		t.Fatalf("notifications after recovery: %q", got)
	}
}

// TestRebuildIsByteIdentical deletes every artifact and rebuilds views and
// artifacts from the log alone.
func TestRebuildIsByteIdentical(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, clock := openManual(t, dir)
	for i := range 4 {
		d := register(t, s)
		clock.Advance(time.Second)
		switch i {
		case 0:
			s.Complete(ctx, d.ID, "first", "", "")
			s.Ack(ctx, TerminalNotificationID(d.ID))
			s.Read(ctx, "ses_root", d.ID, 0)
		case 1:
			s.Progress(ctx, d.ID, "partial")
			s.Timeout(ctx, d.ID)
			s.Ack(ctx, TerminalNotificationID(d.ID))
		case 2:
			s.Cancel(ctx, d.ID, "")
		}
	}
	snapshot := func(s *Store) (string, map[string]string) {
		list, err := s.List("ses_root", ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		files := map[string]string{}
		for _, d := range list {
			if d.ArtifactPath != "" {
				b, err := os.ReadFile(filepath.Join(dir, d.ArtifactPath))
				if err != nil {
					t.Fatal(err)
				}
				files[d.ID] = string(b)
			}
		}
		ns := mustNotifications(t, s)
		var sb strings.Builder
		sb.WriteString(artifact.ListText(list))
		for _, n := range ns {
			sb.WriteString(n.ID + n.Text)
		}
		return sb.String(), files
	}
	wantViews, wantFiles := snapshot(s)
	if len(wantFiles) != 3 {
		t.Fatalf("want 3 artifacts, have %d", len(wantFiles))
	}
	s.Close()
	if err := os.RemoveAll(filepath.Join(dir, "0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	c := clocktest.New(clock.Now())
	s, err := Open(dir, Options{Now: c.Now, Rebuild: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	gotViews, gotFiles := snapshot(s)
	if gotViews != wantViews {
		t.Fatalf("views after rebuild:\n%s\nwant\n%s", gotViews, wantViews)
	}
	for id, want := range wantFiles {
		if gotFiles[id] != want {
			t.Fatalf("artifact %s after rebuild:\n%q\nwant\n%q", id, gotFiles[id], want)
		}
	}
}

// TestWaitNotifications waits for an all-complete through its quiet period
// on the wall clock (a synctest bubble's), and for a terminal notification
// made due by another goroutine's command.
func TestWaitNotifications(t *testing.T) { synctest.Test(t, testWaitNotifications) }

func testWaitNotifications(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	s.clock = WallClock{} // the quiet period is waited for
	d := register(t, s)
	s.Complete(ctx, d.ID, "x", "", "")
	if _, err := s.Ack(ctx, TerminalNotificationID(d.ID)); err != nil {
		t.Fatal(err)
	}
	ns, err := s.WaitNotifications(ctx, "", time.Minute)
	if err != nil || len(ns) != 1 || ns[0].Kind != KindAllComplete {
		t.Fatalf("waited for the all-complete: %+v %v", ns, err)
	}
	if _, err := s.Ack(ctx, ns[0].ID); err != nil {
		t.Fatal(err)
	}

	e := register(t, s)
	got := make(chan []Notification)
	go func() {
		ns, err := s.WaitNotifications(ctx, "ses_parent", time.Minute)
		if err != nil {
			t.Error(err)
		}
		got <- ns
	}()
	if _, err := s.Fail(ctx, e.ID, "boom"); err != nil {
		t.Fatal(err)
	}
	if ns := <-got; len(ns) != 1 || ns[0].ID != TerminalNotificationID(e.ID) {
		t.Fatalf("waited for the terminal notification: %+v", ns)
	}
	// Nothing due and no wait: returns at once, empty.
	if ns, err := s.WaitNotifications(ctx, "ses_nobody", 0); err != nil || len(ns) != 0 {
		t.Fatalf("no wait: %+v %v", ns, err)
	}
}

func TestCarried(t *testing.T) {
	ctx := context.Background()
	s, clock := openManual(t, t.TempDir())
	var done []string
	for i := range 5 {
		d := register(t, s)
		clock.Advance(time.Second)
		if i < 3 {
			s.Complete(ctx, d.ID, fmt.Sprint("result ", i), "", "")
			s.Ack(ctx, TerminalNotificationID(d.ID))
			done = append(done, d.ID)
		}
	}
	r := registration()
	r.RootSessionID = "ses_root2" // a root whose name extends the first must not leak in
	other := must(s.Register(ctx, r))(t)
	s.Complete(ctx, other.ID, "elsewhere", "", "")
	s.Ack(ctx, TerminalNotificationID(other.ID))
	s.Read(ctx, "ses_root", done[1], 0)

	running, unread, err := s.Carried("ses_root", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(running) != 2 || running[0].CreatedAt.After(running[1].CreatedAt) {
		t.Fatalf("running: %+v", running)
	}
	if len(unread) != 2 || unread[0].ID != done[2] || unread[1].ID != done[0] {
		t.Fatalf("unread, newest first: got %v %v, want %s %s", unread[0].ID, unread[1].ID, done[2], done[0])
	}
	if _, unread, err := s.Carried("ses_root", 1); err != nil || len(unread) != 1 || unread[0].ID != done[2] {
		t.Fatalf("max 1 unread: %+v", unread)
	}
	if running, unread, err := s.Carried("ses_root2", 0); err != nil || len(running) != 0 || len(unread) != 1 || unread[0].ID != other.ID {
		t.Fatalf("ses_root2: %+v %+v", running, unread)
	}
}

// TestPersistOutlivesCallerContext: the caller's context ends while the
// terminal command runs (after it read the clock, before its artifact and
// its append); the terminal and persisted events are still recorded and
// the notification due.
func TestPersistOutlivesCallerContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int32
	base := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	s, err := Open(t.TempDir(), Options{Now: func() time.Time {
		if calls.Add(1) == 2 { // register, then complete
			cancel()
		}
		return base
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := register(t, s)
	got, err := s.Complete(ctx, d.ID, "result", "", "")
	if err != nil || got.PersistedAt.IsZero() || ctx.Err() == nil {
		t.Fatalf("complete: persisted=%v err=%v ctx=%v", got.PersistedAt, err, ctx.Err())
	}
	if got := dueIDs(t, s, ""); got != TerminalNotificationID(d.ID) {
		t.Fatalf("due: %q", got)
	}
}

// TestViewsFollowTheEvents: a sub-millisecond timeout leaves no deadline
// behind, and notification texts name the directory the store is opened
// from, not the one it was written in.
func TestViewsFollowTheEvents(t *testing.T) {
	ctx := context.Background()
	parent := t.TempDir()
	dir := filepath.Join(parent, "a")
	s, _ := openManual(t, dir)
	r := registration()
	r.Timeout = 1500*time.Millisecond + 500*time.Microsecond
	d, err := s.Register(ctx, r)
	if err != nil || d.Timeout != 1500*time.Millisecond {
		t.Fatalf("register: %v %v", d.Timeout, err)
	}
	s.Complete(ctx, d.ID, "x", "", "")
	err = s.log.View(func(tx *eventlog.Tx) error {
		b, _ := tx.Bucket(bucketDeadlines)
		if n := b.Stats().KeyN; n != 0 {
			return fmt.Errorf("%d deadlines left after completion", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	moved := filepath.Join(parent, "b")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	s, _ = openManual(t, moved)
	ns := mustNotifications(t, s)
	if len(ns) != 1 || !strings.Contains(ns[0].Text, "<artifact>"+moved+"/") {
		t.Fatalf("notification after moving the data directory: %+v", ns)
	}
	r.IdempotencyKey = strings.Repeat("k", 250)
	if _, err := s.Register(ctx, r); !errors.Is(err, fsm.ErrInvalid) || !strings.Contains(err.Error(), "idempotency key is 250 bytes") {
		t.Fatalf("long idempotency key: %v", err)
	}
}

// must returns a call's value, failing the test on its error:
// must(s.Get(id))(t).
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// TestSlowArtifactDoesNotHoldTheLog: a terminal command's artifact that is
// not durable within artifactWait does not hold the log's writer longer:
// the terminal event is recorded alone, other commands commit meanwhile,
// and once the write ends the pending artifact is persisted once.
func TestSlowArtifactDoesNotHoldTheLog(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, _ := openManual(t, dir)
	d, other := register(t, s), register(t, s)

	release, entered := make(chan struct{}), make(chan struct{}, 1)
	write, wait := writeArtifactFile, artifactWait
	t.Cleanup(func() { writeArtifactFile, artifactWait = write, wait })
	writeArtifactFile = func(dir, rel string, r *artifact.Rendering) error {
		entered <- struct{}{}
		<-release // held until the test lets it go
		return write(dir, rel, r)
	}
	artifactWait = time.Millisecond

	got, err := s.Complete(ctx, d.ID, "kept result", "", "")
	if err != nil || got.State != fsm.Complete || !got.PersistedAt.IsZero() {
		t.Fatalf("complete while its artifact is held: %+v %v", got, err)
	}
	<-entered
	// The artifact is still being written: the log takes other commands.
	if _, err := s.Progress(ctx, other.ID, "still going"); err != nil {
		t.Fatalf("progress while an artifact is held: %v", err)
	}
	if len(mustNotifications(t, s)) != 0 {
		t.Fatal("notified before the artifact was persisted")
	}
	writeArtifactFile = write
	close(release)
	if _, err := s.PersistPending(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, _ = openManual(t, dir)
	checkPersistedOnce(t, s, dir, d.ID)
}
