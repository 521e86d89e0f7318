package eventlog

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// precheck checks the structure of the file at path before bbolt opens it,
// under a lock of the kind bbolt will take, so that no
// writer changes the file while it is read. bbolt trusts what it reads at
// open: a damaged freelist can make it allocate without bound, a damaged
// inline bucket can plant a bad pointer that kills the garbage collector;
// neither is a panic anyone can recover from. The lock is released before
// bbolt takes its own (a second flock from this process would conflict).
//
// A writer checks every page (see checkFile): a write may rewrite or free
// any of them, and writing through damage is how damage becomes loss. A
// reader checks only what bbolt trusts before it reads a record
// (checkShallow), so that opening costs the same for any size of log;
// reads below that go through guard.
//
// A missing file is fine (bbolt creates it); so is an empty one for a
// writer (bbolt initialises it).
func precheck(path string, readOnly bool, timeout time.Duration) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && !readOnly {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	how := syscall.LOCK_EX
	if readOnly {
		how = syscall.LOCK_SH
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("lock: %w", err)
		}
		if time.Now().After(deadline) {
			return ErrLocked
		}
		time.Sleep(50 * time.Millisecond) // bbolt polls the same way
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		if readOnly {
			return damage(NoPage, "the file is empty (0 bytes)")
		}
		return nil
	}
	pf, err := readLayout(f, fi.Size())
	if err != nil {
		return err
	}
	defer pf.mapFile(f, fi.Size())()
	// Count the records and the stream index's entries on the way: the
	// walk reads every leaf anyway, and a writer must not extend a log
	// whose index has lost entries (or records).
	counts := map[string]int{}
	var problems []error
	if err := guard("check", func() error {
		if readOnly {
			problems = pf.checkShallow()
		} else {
			problems = pf.walkCounting(counts)
		}
		return nil
	}); err != nil {
		return err
	}
	if len(problems) == 0 && !readOnly && counts[string(bucketEvents)] != counts[string(bucketVersions)] {
		problems = append(problems, damage(NoPage, "the log holds %d records but its stream index %d entries",
			counts[string(bucketEvents)], counts[string(bucketVersions)]))
	}
	return joinDamage(problems)
}
