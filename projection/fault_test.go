package projection

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
)

// TestFaultUnwritableArtifactDir makes the directory an artifact goes to
// unwritable (mode 0500) when a delegation ends. The delegation is
// terminal and stays so, but it is not persisted: no terminal notification
// is due, a read returns the pending text without recording a read, and an
// ack is refused. Persisting is retried (PersistPending, or the next Open)
// and fails while the directory stays unwritable, also across a restart;
// once it is writable again the retry persists it, and then exactly one
// terminal notification is due, its event after the terminal one, the
// artifact on disk with the recorded size and hash.
func TestFaultUnwritableArtifactDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root, which ignores directory permissions; run as an unprivileged user to exercise this test")
	}
	const project, rootA, rootB = "0123456789abcdef", "ses_rootA", "ses_rootB"
	for _, c := range []struct {
		name  string
		root  string // the blocked delegation's root session
		block string // the directory made unwritable, relative to the data directory
	}{
		// The session directory exists (an earlier artifact is in it):
		// the temporary file cannot be created.
		{"session dir", rootA, filepath.Join(project, rootA)},
		// The session directory does not exist yet and cannot be made.
		{"project dir", rootB, project},
	} {
		for _, retry := range []string{"PersistPending", "reopen"} {
			t.Run(c.name+"/"+retry, func(t *testing.T) {
				testFaultUnwritable(t, c.root, c.block, retry)
			})
		}
	}
}

func testFaultUnwritable(t *testing.T, root, block, retry string) {
	ctx := context.Background()
	dir := t.TempDir()
	clock := newModelClock()
	open := func() *Store {
		t.Helper()
		s, err := Open(dir, Options{Now: clock.Now})
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return s
	}
	s := open()
	defer func() { s.Close() }()
	reg := func(root string) fsm.Delegation {
		t.Helper()
		d, err := s.Register(ctx, Registration{ProjectID: "0123456789abcdef", RootSessionID: root, ParentSessionID: root, Agent: "researcher", Prompt: "p"})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// An earlier delegation, persisted and acknowledged, makes the
	// project and rootA directories exist.
	first := reg("ses_rootA") // rootA of TestFaultUnwritableArtifactDir
	if d, err := s.Complete(ctx, first.ID, "first", "", ""); err != nil || d.PersistedAt.IsZero() {
		t.Fatalf("complete %s: %+v %v", first.ID, d, err)
	}
	if _, err := s.Ack(ctx, TerminalNotificationID(first.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(ctx, "ses_rootA", first.ID, 0); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	for _, n := range faultDue(t, s) { // its cycle's all-complete
		if _, err := s.Ack(ctx, n.ID); err != nil {
			t.Fatal(err)
		}
	}
	d := reg(root)
	sibling := reg(root) // stays active: the notification's <remaining>

	blocked := filepath.Join(dir, block)
	if err := os.Chmod(blocked, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(blocked, 0o700) }) // let TempDir remove it
	before := faultDirNames(t, dir)

	clock.Advance(time.Second)
	got, err := s.Complete(ctx, d.ID, "the result", "", "")
	if err != nil || got.State != fsm.Complete || !got.PersistedAt.IsZero() {
		t.Fatalf("complete with an unwritable artifact dir: %+v %v, want complete and not persisted", got, err)
	}
	// Terminal but not persisted, and so nothing is due.
	stillPending := func(when string) {
		t.Helper()
		cur, err := s.Get(d.ID)
		if err != nil || cur.State != fsm.Complete || !cur.PersistedAt.IsZero() {
			t.Fatalf("%s: %+v %v, want complete and not persisted", when, cur, err)
		}
		if ns := faultDue(t, s); len(ns) != 0 {
			t.Fatalf("%s: notifications %v due before the artifact is persisted", when, ns)
		}
		if _, err := s.Ack(ctx, TerminalNotificationID(d.ID)); !errors.Is(err, fsm.ErrInvalid) {
			t.Fatalf("%s: ack of the unpersisted delegation: %v, want ErrInvalid", when, err)
		}
		res, err := s.Read(ctx, root, d.ID, 0)
		if err != nil || res.Artifact || !strings.Contains(res.Text, "Status: complete\n") || !strings.Contains(res.Text, "again after persistence completes") {
			t.Fatalf("%s: read: %+v %v, want the pending text", when, res, err)
		}
		if k := kinds(t, s, d.ID); k != "registered completed rejected" {
			t.Fatalf("%s: events %q, want no persisted and no read event", when, k)
		}
		if after := faultDirNames(t, dir); !slices.Equal(after, before) {
			t.Fatalf("%s: files changed under the data directory:\nbefore %v\nafter  %v", when, before, after)
		}
	}
	// Terminal is final even unpersisted: a late command is refused and
	// recorded; the same command again changes nothing.
	if _, err := s.Cancel(ctx, d.ID, ""); !errors.Is(err, fsm.ErrTerminal) {
		t.Fatalf("cancel after complete: %v, want ErrTerminal", err)
	}
	if _, err := s.Complete(ctx, d.ID, "the result", "", ""); err != nil {
		t.Fatalf("the same complete again: %v", err)
	}
	stillPending("after complete")

	n, err := s.PersistPending(ctx)
	if n != 0 || err == nil || !errors.Is(err, os.ErrPermission) {
		t.Fatalf("PersistPending on an unwritable dir: %d, %v; want 0 and a permission error", n, err)
	}
	stillPending("after a failed retry")

	// A restart while still unwritable opens fine and keeps it pending.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open()
	stillPending("after a restart")

	if err := os.Chmod(blocked, 0o700); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	switch retry {
	case "PersistPending":
		if n, err := s.PersistPending(ctx); n != 1 || err != nil {
			t.Fatalf("PersistPending once writable: %d, %v; want 1", n, err)
		}
	case "reopen":
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = open()
	}
	want := TerminalNotificationID(d.ID)
	checkOnce := func(when string) {
		t.Helper()
		ns := faultDue(t, s)
		if len(ns) != 1 || ns[0].ID != want || ns[0].Remaining != 1 {
			t.Fatalf("%s: notifications %+v, want exactly %s with remaining 1", when, ns, want)
		}
		cur, err := s.Get(d.ID)
		if err != nil || cur.PersistedAt.IsZero() {
			t.Fatalf("%s: %+v %v, want persisted", when, cur, err)
		}
		if k := kinds(t, s, d.ID); k != "registered completed rejected persisted" {
			t.Fatalf("%s: events %q, want one persisted event", when, k)
		}
		// Persist before notify: due from the persisted event on.
		err = s.Log().View(func(tx *eventlog.Tx) error {
			r, err := tx.Record(ns[0].Seq)
			if err == nil && (fsm.Kind(r.Kind) != fsm.KindPersisted || r.Stream != d.ID) {
				err = errors.New("the notification's event is " + fsm.Kind(r.Kind).String() + " of " + r.Stream)
			}
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		file, err := os.ReadFile(filepath.Join(dir, cur.ArtifactPath))
		if err != nil || int64(len(file)) != cur.ArtifactSize || xxhash.Sum64(file) != cur.ArtifactHash || !strings.HasSuffix(string(file), "\n\nthe result") {
			t.Fatalf("%s: artifact %q (%v), recorded size %d hash %x", when, file, err, cur.ArtifactSize, cur.ArtifactHash)
		}
	}
	checkOnce("after the retry")
	// Retrying again finds nothing to do; nor does a restart.
	if n, err := s.PersistPending(ctx); n != 0 || err != nil {
		t.Fatalf("PersistPending again: %d, %v; want 0", n, err)
	}
	checkOnce("after a second retry")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open()
	checkOnce("after a restart")

	if res, err := s.Ack(ctx, want); err != nil || res.Already {
		t.Fatalf("ack: %+v %v", res, err)
	}
	if res, err := s.Ack(ctx, want); err != nil || !res.Already {
		t.Fatalf("second ack: %+v %v", res, err)
	}
	if ns := faultDue(t, s); len(ns) != 0 {
		t.Fatalf("after the ack: %v", ns)
	}
	if unread, err := s.List(root, ListOptions{Unread: true}); err != nil || len(unread) != 1 || unread[0].ID != d.ID {
		t.Fatalf("unread after the ack: %+v %v", unread, err)
	}
	if res, err := s.Read(ctx, root, d.ID, 0); err != nil || !res.Artifact {
		t.Fatalf("read once persisted: %+v %v", res, err)
	}
	if k := kinds(t, s, d.ID); k != "registered completed rejected persisted notified read" {
		t.Fatalf("events at the end: %q", k)
	}
	if cur, _ := s.Get(sibling.ID); cur.State != fsm.Registered {
		t.Fatalf("sibling: %+v", cur)
	}
	if err := s.Log().Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

func faultDue(t *testing.T, s *Store) []Notification {
	t.Helper()
	ns, err := s.Notifications("")
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// faultDirNames lists every file and directory under dir except the log.
func faultDirNames(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(dir, path); rel != "." && rel != LogFile {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
