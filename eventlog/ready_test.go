package eventlog

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// TestAppendReady: an append with Ready is committed only once Ready
// returns nil; one whose Ready fails is dropped with that error, and the
// appends beside it commit.
func TestAppendReady(t *testing.T) {
	l := openTest(t, filepath.Join(t.TempDir(), "log.db"), Options{})
	ctx := context.Background()
	called, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		_, err := l.Append(ctx, Append{Stream: "a", Entries: []Entry{entry(1, "")}, Ready: func() error {
			once.Do(func() { close(called) })
			<-release
			return nil
		}})
		done <- err
	}()
	<-called
	if last := l.Last(); last != 0 {
		t.Fatalf("committed before Ready returned: Last = %d", last)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if last := l.Last(); last != 1 {
		t.Fatalf("Last = %d after Ready returned, want 1", last)
	}

	// b and c queue while the writer waits on a's Ready, so that they
	// share the next batch: b's failing Ready drops b alone.
	called, release = make(chan struct{}), make(chan struct{})
	go func() {
		_, err := l.Append(ctx, Append{Stream: "a", Entries: []Entry{entry(1, "")}, Ready: func() error {
			close(called)
			<-release
			return nil
		}})
		done <- err
	}()
	<-called
	failed := errors.New("not durable")
	var wg sync.WaitGroup
	var errB, errC error
	wg.Go(func() {
		_, errB = l.Append(ctx, Append{Stream: "b", Entries: []Entry{entry(1, "")}, Ready: func() error { return failed }})
	})
	wg.Go(func() {
		_, errC = l.Append(ctx, Append{Stream: "c", Entries: []Entry{entry(1, "")}})
	})
	for len(l.reqs) < 2 { // both queued behind a (the writer holds no lock they need)
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if errB != failed || errC != nil {
		t.Fatalf("append with a failing Ready: %v (want %v); beside it: %v", errB, failed, errC)
	}
	err := l.View(func(tx *Tx) error {
		if b, c := tx.StreamVersion("b"), tx.StreamVersion("c"); b != 0 || c != 1 {
			t.Errorf("stream versions b %d (want 0), c %d (want 1)", b, c)
		}
		return nil
	})
	if err != nil || l.Last() != 3 {
		t.Fatalf("Last = %d, want 3 (%v)", l.Last(), err)
	}
}
