package projection

import (
	"context"
	"runtime"
	"testing"
)

// TestCommandLocksPerDelegation: a command waits only for commands on its
// own delegation, and the lock map keeps nothing once they are done.
func TestCommandLocksPerDelegation(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	a, b := register(t, s), register(t, s)
	if _, err := s.Start(ctx, a.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(ctx, b.ID, ""); err != nil {
		t.Fatal(err)
	}

	unlock := s.lock(a.ID)
	// Another delegation's command runs while a's lock is held.
	if _, err := s.Progress(ctx, b.ID, "b goes on"); err != nil {
		t.Fatal(err)
	}
	// A command on a waits for the holder.
	done := make(chan error, 1)
	go func() {
		_, err := s.Progress(ctx, a.ID, "a waited")
		done <- err
	}()
	for s.lockUsers(a.ID) < 2 {
		runtime.Gosched()
	}
	select {
	case err := <-done:
		t.Fatalf("a command on %s ran while its lock was held (err %v)", a.ID, err)
	default:
	}
	if got := kinds(t, s, a.ID); got != "registered started" {
		t.Fatalf("events of %s while its lock is held: %s", a.ID, got)
	}
	unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := kinds(t, s, a.ID); got != "registered started progressed" {
		t.Fatalf("events of %s after its lock was released: %s", a.ID, got)
	}
	s.lockMu.Lock()
	left := len(s.locks)
	s.lockMu.Unlock()
	if left != 0 {
		t.Fatalf("%d delegation locks left after every command ended", left)
	}
}

// lockUsers counts the commands holding or waiting for id's lock.
func (s *Store) lockUsers(id string) int {
	s.lockMu.Lock()
	defer s.lockMu.Unlock()
	if l := s.locks[id]; l != nil {
		return l.users
	}
	return 0
}
