package projection

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Reads of one delegation that run together share their work: while one
// of them waits for the delegation's lock (here held by the test, as a
// commit would hold it), the others wait for its result instead of
// queueing for the lock to commit a read event each, one after the other
// (1,000 readers woken by a completion waited for 1,000 commits). All get
// the artifact, and one read event records them.
func TestConcurrentReadsShareOneCommit(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	d := register(t, s)
	if _, err := s.Complete(ctx, d.ID, "the result", "", ""); err != nil {
		t.Fatal(err)
	}
	const readers = 50
	unlock := s.lock(d.ID)
	results := make(chan ReadResult, readers)
	errs := make(chan error, readers)
	for range readers {
		go func() {
			res, err := s.Read(ctx, d.RootSessionID, d.ID, 0)
			if err != nil {
				errs <- err
				return
			}
			results <- res
		}()
	}
	// Every reader is blocked: on the lock, or on another reader.
	buf := make([]byte, 1<<20)
	for blockedReads(buf) < readers {
		select {
		case err := <-errs:
			unlock()
			t.Fatal(err)
		default:
			runtime.Gosched()
		}
	}
	unlock()
	for range readers {
		select {
		case res := <-results:
			if !res.Artifact || !strings.HasSuffix(res.Text, "the result") {
				t.Fatalf("read: %+v", res)
			}
		case err := <-errs:
			t.Fatal(err)
		}
	}
	if k := kinds(t, s, d.ID); k != "registered completed persisted read" {
		t.Fatalf("events %q, want one read event for %d reads that ran together", k, readers)
	}
}

// blockedReads counts the goroutines blocked inside Store.Read on a
// mutex or a channel.
func blockedReads(buf []byte) int {
	n := runtime.Stack(buf, true)
	count := 0
	for g := range bytes.SplitSeq(buf[:n], []byte("\n\n")) {
		head, _, _ := bytes.Cut(g, []byte("\n"))
		if bytes.Contains(g, []byte("projection.(*Store).Read(")) &&
			(bytes.Contains(head, []byte("[sync.Mutex.Lock")) || bytes.Contains(head, []byte("[chan receive"))) {
			count++
		}
	}
	return count
}

// Blocking reads of one delegation share one wait on the log: one
// goroutine reads the record after each commit, however many readers
// wait (each used to read it in its own transaction after every commit).
// When the delegation completes, every reader gets the artifact.
func TestBlockingReadsShareOneWatch(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	d := register(t, s)
	const readers = 50
	results := make(chan ReadResult, readers)
	errs := make(chan error, readers)
	for range readers {
		go func() {
			res, err := s.Read(ctx, d.RootSessionID, d.ID, time.Hour)
			if err != nil {
				errs <- err
				return
			}
			results <- res
		}()
	}
	buf := make([]byte, 1<<20)
	for waitingReads(buf) < readers {
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
			runtime.Gosched()
		}
	}
	if n := goroutinesIn(buf, "eventlog.(*Log).Wait("); n != 1 {
		t.Fatalf("%d goroutines wait on the log for %d blocking reads of one delegation, want 1", n, readers)
	}
	// Another delegation's commits wake the watch, not the readers.
	other := register(t, s)
	if _, err := s.Progress(ctx, d.ID, "half way"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Complete(ctx, other.ID, "other", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Complete(ctx, d.ID, "the result", "", ""); err != nil {
		t.Fatal(err)
	}
	for range readers {
		select {
		case res := <-results:
			if !res.Artifact || !strings.HasSuffix(res.Text, "the result") {
				t.Fatalf("read: %+v", res)
			}
		case err := <-errs:
			t.Fatal(err)
		}
	}
}

// waitingReads counts the goroutines waiting in a select inside
// Store.Read.
func waitingReads(buf []byte) int {
	n := runtime.Stack(buf, true)
	count := 0
	for g := range bytes.SplitSeq(buf[:n], []byte("\n\n")) {
		head, _, _ := bytes.Cut(g, []byte("\n"))
		if bytes.Contains(g, []byte("projection.(*Store).Read(")) && bytes.Contains(head, []byte("[select")) {
			count++
		}
	}
	return count
}

// goroutinesIn counts the goroutines whose stack holds fn.
func goroutinesIn(buf []byte, fn string) int {
	n := runtime.Stack(buf, true)
	count := 0
	for g := range bytes.SplitSeq(buf[:n], []byte("\n\n")) {
		if bytes.Contains(g, []byte(fn)) {
			count++
		}
	}
	return count
}
