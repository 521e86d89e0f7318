package projection

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection/artifact"
)

// TestLargeArtifactCommittedBesideItsFile: a terminal command whose
// artifact is large (largeArtifact) commits its terminal event while the
// file is written, and its persisted event once the file is durable. In
// between the delegation is terminal, not persisted, and no notification
// is due; a read then waits for the command instead of writing the file
// beside it, and the log holds one persisted event.
func TestLargeArtifactCommittedBesideItsFile(t *testing.T) {
	large, write := largeArtifact, writeArtifactFile
	t.Cleanup(func() { largeArtifact, writeArtifactFile = large, write })
	largeArtifact = 0
	release, entered := make(chan struct{}), make(chan struct{}, 1)
	writeArtifactFile = func(dir, rel string, r *artifact.Rendering) error {
		entered <- struct{}{}
		<-release // held until the test lets it go
		return write(dir, rel, r)
	}
	ctx := context.Background()
	dir := t.TempDir()
	s, _ := openManual(t, dir)
	d := register(t, s)
	before := s.Log().Last()

	completed := make(chan error, 1)
	go func() {
		got, err := s.Complete(ctx, d.ID, "the result", "", "")
		if err == nil && got.PersistedAt.IsZero() {
			err = fmt.Errorf("complete returned a record not persisted: %+v", got)
		}
		completed <- err
	}()
	<-entered
	if _, err := s.Log().Wait(ctx, before); err != nil {
		t.Fatal(err)
	}
	got, err := s.stored(d.ID)
	if err != nil || got.State != fsm.Complete || !got.PersistedAt.IsZero() {
		t.Fatalf("while the artifact is written: %+v %v; want complete, not persisted", got, err)
	}
	if ns := mustNotifications(t, s); len(ns) != 0 {
		t.Fatalf("notified before the artifact was durable: %+v", ns)
	}
	read := make(chan error, 1)
	go func() {
		rr, err := s.Read(ctx, registration().RootSessionID, d.ID, 0)
		if err == nil && (!rr.Artifact || rr.Delegation.Result != "the result") {
			err = fmt.Errorf("read returned %+v", rr)
		}
		read <- err
	}()
	close(release)
	if err := <-completed; err != nil {
		t.Fatal(err)
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	if k := kinds(t, s, d.ID); k != "registered completed persisted read" {
		t.Fatalf("events: %s", k)
	}
	final := must(s.Get(d.ID))(t)
	file, err := os.ReadFile(filepath.Join(dir, final.ArtifactPath))
	if err != nil || string(file) != string(artifact.Render(&final)) {
		t.Fatalf("artifact: %q %v", file, err)
	}
}
