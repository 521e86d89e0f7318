//go:build linux

package eventlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// Faults under the log. bbolt takes a concrete *os.File from
// Options.OpenFile, which cannot be wrapped, so the faults go one level
// lower: faultFile swaps the descriptor under that *os.File (dup3) for one
// whose writes or syncs fail, and swaps the healthy one back to heal.
//
//   - /dev/full: every write fails with ENOSPC, as on a full disk.
//   - /dev/null: writes succeed and vanish, fdatasync fails with EINVAL: a
//     device that took the data and could not make it durable.
//
// Both devices report size 0 to fstat, which bbolt checks before it grows
// or remaps the file, so a commit that needs a bigger file fails there,
// before it touches the mapping. faultMakeRoom keeps a commit within the
// file, so that it reaches the write or the sync under test.
//
// TestFaultFullTmpfs adds the real thing: a small tmpfs in a private mount
// namespace, full after a few hundred kilobytes.

// faultFile controls the descriptor bbolt's file uses.
type faultFile struct {
	mu      sync.Mutex
	fd      int // the descriptor inside bbolt's *os.File
	healthy int // a duplicate of the original: keeps its open file description, and bbolt's flock on it, alive
}

// faultOpener returns an Options.OpenFile that records the descriptor in a
// faultFile.
func faultOpener(t *testing.T) (func(string, int, os.FileMode) (*os.File, error), *faultFile) {
	ff := &faultFile{fd: -1, healthy: -1}
	open := func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, perm)
		if err != nil {
			return nil, err
		}
		fd := int(f.Fd())
		h, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
		if errno != 0 {
			f.Close()
			return nil, fmt.Errorf("duplicate descriptor: %w", errno)
		}
		ff.mu.Lock()
		ff.fd, ff.healthy = fd, int(h)
		ff.mu.Unlock()
		return f, nil
	}
	t.Cleanup(ff.release)
	return open, ff
}

// inject points the log's descriptor at device.
func (ff *faultFile) inject(t *testing.T, device string) {
	t.Helper()
	dev, err := os.OpenFile(device, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	ff.mu.Lock()
	defer ff.mu.Unlock()
	if err := syscall.Dup3(int(dev.Fd()), ff.fd, syscall.O_CLOEXEC); err != nil {
		t.Fatalf("inject %s: %v", device, err)
	}
}

// heal points the log's descriptor back at the file.
func (ff *faultFile) heal(t *testing.T) {
	t.Helper()
	ff.mu.Lock()
	defer ff.mu.Unlock()
	if err := syscall.Dup3(ff.healthy, ff.fd, syscall.O_CLOEXEC); err != nil {
		t.Fatalf("heal: %v", err)
	}
}

// release closes the duplicate. Until then the file stays locked, even
// after the log is closed.
func (ff *faultFile) release() {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	if ff.healthy >= 0 {
		syscall.Close(ff.healthy)
		ff.healthy = -1
	}
}

// faultClose heals the descriptor, closes the log and releases the file.
func faultClose(t *testing.T, l *Log, ff *faultFile) {
	t.Helper()
	ff.heal(t)
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	ff.release()
}

// faultMakeRoom gives the file a few hundred free pages (a scratch bucket
// written and dropped, outside the log's own buckets), so that the small
// commits that follow reuse pages instead of growing the file. It ends
// with an acknowledged append (which also releases the freed pages) and
// returns it.
func faultMakeRoom(t *testing.T, l *Log) Record {
	t.Helper()
	scratch := []byte("fault-scratch")
	err := l.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(scratch)
		if err != nil {
			return err
		}
		for i := range 300 {
			if err := b.Put(u64(uint64(i)), make([]byte, 4000)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = l.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(scratch) })
	}
	if err != nil {
		t.Fatal(err)
	}
	rec := faultAppend(t, l, "room", "")
	if n := l.db.Stats().FreePageN; n < 200 {
		t.Fatalf("only %d free pages after making room", n)
	}
	return rec
}

// faultAppend appends one record to stream s (payload = key, or a counter)
// and returns it as the log should give it back.
var faultCounter struct {
	sync.Mutex
	n int
}

func faultAppend(t *testing.T, l *Log, s, key string) Record {
	t.Helper()
	payload := key
	if payload == "" {
		faultCounter.Lock()
		faultCounter.n++
		payload = fmt.Sprintf("payload-%d", faultCounter.n)
		faultCounter.Unlock()
	}
	res, err := l.Append(context.Background(), Append{Stream: s, Key: key, Entries: []Entry{entry(1, payload)}})
	if err != nil {
		t.Fatalf("append %q: %v", payload, err)
	}
	return Record{Seq: res.First, Stream: s, Payload: []byte(payload)}
}

// faultPayloads returns every record's payload, in log order.
func faultPayloads(t *testing.T, l *Log) []string {
	t.Helper()
	var out []string
	for _, r := range collect(t, l, 0) {
		out = append(out, string(r.Payload))
	}
	return out
}

func faultWant(recs []Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Payload)
	}
	return out
}

// faultBrokenAppend checks the append that met the fault: it fails with
// ErrBroken, says why (the device's error) and what to do (reopen), and
// moves nothing.
func faultBrokenAppend(t *testing.T, l *Log, key, cause string) {
	t.Helper()
	last := l.Last()
	_, err := l.Append(context.Background(), Append{Stream: "s", Key: key, Entries: []Entry{entry(1, key)}})
	if !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), cause) || !strings.Contains(err.Error(), "reopen") {
		t.Fatalf("append on a faulty file = %v, want ErrBroken naming %q and saying to reopen", err, cause)
	}
	if l.Last() != last {
		t.Fatalf("a failed commit moved the last sequence number from %d to %d", last, l.Last())
	}
}

// faultAfterReopen opens path on a healthy file and checks that it holds
// exactly want, verifies, and that the key of the append that failed now
// writes its record exactly once (the failed commit never landed).
func faultAfterReopen(t *testing.T, path string, want []string, failedKey string) {
	t.Helper()
	l := openTest(t, path, Options{})
	if got := faultPayloads(t, l); !slices.Equal(got, want) {
		t.Fatalf("after reopening on a healthy file the log holds\n%q\nwant every acknowledged record and nothing else:\n%q", got, want)
	}
	if err := l.Verify(context.Background()); err != nil {
		t.Fatalf("verify after reopen: %v", err)
	}
	res, err := l.Append(context.Background(), Append{Stream: "s", Key: failedKey, Entries: []Entry{entry(1, failedKey)}})
	if err != nil || res.Duplicate {
		t.Fatalf("retry of the failed append: %+v %v (want a fresh write: the failed commit never landed)", res, err)
	}
	res, err = l.Append(context.Background(), Append{Stream: "s", Key: failedKey, Entries: []Entry{entry(1, failedKey)}})
	if err != nil || !res.Duplicate {
		t.Fatalf("second retry: %+v %v, want a duplicate", res, err)
	}
	if got := faultPayloads(t, l); !slices.Equal(got, append(slices.Clone(want), failedKey)) {
		t.Fatalf("after the retries: %q", got)
	}
}

// TestFaultDiskFullOnCommit: the disk fills up under a running log. The
// append fails with ErrBroken naming ENOSPC, later appends are refused even
// once space is back (the log cannot know what reached the disk), readers
// keep working, and reopening finds every acknowledged record and nothing
// else.
func TestFaultDiskFullOnCommit(t *testing.T) {
	testFaultDevice(t, "/dev/full", syscall.ENOSPC.Error())
}

// TestFaultFdatasyncFails: the device takes the writes but fdatasync
// fails. The append is not acknowledged (ErrBroken naming the sync's
// EINVAL), and after reopening it is not there.
func TestFaultFdatasyncFails(t *testing.T) {
	testFaultDevice(t, "/dev/null", syscall.EINVAL.Error())
}

func testFaultDevice(t *testing.T, device, cause string) {
	path := filepath.Join(t.TempDir(), "log.db")
	open, ff := faultOpener(t)
	l, err := Open(path, Options{OpenFile: open})
	if err != nil {
		t.Fatal(err)
	}
	var acked []Record
	for i := range 20 {
		acked = append(acked, faultAppend(t, l, fmt.Sprintf("s%d", i%3), ""))
	}
	acked = append(acked, faultMakeRoom(t, l))
	acked = append(acked, faultAppend(t, l, "s", "acked-before-fault"))
	want := faultWant(acked)

	ff.inject(t, device)
	faultBrokenAppend(t, l, "lost", cause)
	// Refused without touching the file, and still refused after the
	// device recovers: only a reopen reconciles.
	if _, err := l.Append(context.Background(), Append{Stream: "s", Entries: []Entry{entry(1, "refused")}}); !errors.Is(err, ErrBroken) {
		t.Fatalf("second append on a broken log = %v, want ErrBroken", err)
	}
	ff.heal(t)
	if _, err := l.Append(context.Background(), Append{Stream: "s", Entries: []Entry{entry(1, "refused")}}); !errors.Is(err, ErrBroken) {
		t.Fatalf("append after the device recovered = %v, want ErrBroken until reopened", err)
	}
	// Readers still see exactly what was acknowledged.
	if got := faultPayloads(t, l); !slices.Equal(got, want) {
		t.Fatalf("broken log serves %q, want %q", got, want)
	}
	if err := l.Verify(context.Background()); err != nil {
		t.Fatalf("verify on the broken log: %v", err)
	}
	faultClose(t, l, ff)
	faultAfterReopen(t, path, want, "lost")
}

// TestFaultDuringGroupCommit injects the fault while eight appenders share
// commits. Every appender's first error must be ErrBroken; after reopening,
// every acknowledged record is there, nothing unacknowledged is there
// except what a commit whose outcome was unknown wrote (its appenders got
// ErrBroken), and retrying each failed key leaves exactly one copy.
func TestFaultDuringGroupCommit(t *testing.T) {
	for _, device := range []string{"/dev/full", "/dev/null"} {
		t.Run(filepath.Base(device), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log.db")
			open, ff := faultOpener(t)
			l, err := Open(path, Options{OpenFile: open})
			if err != nil {
				t.Fatal(err)
			}
			const writers = 8
			type outcome struct {
				key string
				err error
			}
			results := make(chan outcome, 64)
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						key := fmt.Sprintf("w%d-%d", w, i)
						_, err := l.Append(context.Background(), Append{Stream: fmt.Sprintf("w%d", w), Key: key, Entries: []Entry{entry(1, key)}})
						results <- outcome{key, err}
						if err != nil {
							return
						}
					}
				}()
			}
			go func() { wg.Wait(); close(results) }()
			acked := map[string]bool{}
			var failed []string
			injected := false
			for o := range results {
				switch {
				case o.err == nil:
					acked[o.key] = true
				case !errors.Is(o.err, ErrBroken):
					t.Errorf("append %s: %v, want ErrBroken", o.key, o.err)
				default:
					failed = append(failed, o.key)
				}
				if !injected && len(acked) == 200 {
					ff.inject(t, device)
					injected = true
				}
			}
			if !injected || len(failed) != writers {
				t.Fatalf("injected=%v, %d appenders failed, want all %d", injected, len(failed), writers)
			}
			faultClose(t, l, ff)

			l = openTest(t, path, Options{})
			if err := l.Verify(context.Background()); err != nil {
				t.Fatalf("verify after reopen: %v", err)
			}
			present := map[string]int{}
			for _, p := range faultPayloads(t, l) {
				present[p]++
			}
			landed := 0
			for _, k := range failed {
				landed += present[k]
			}
			for k := range acked {
				if present[k] != 1 {
					t.Errorf("acknowledged %s is there %d times after reopen", k, present[k])
				}
			}
			for k, n := range present {
				if !acked[k] && (!slices.Contains(failed, k) || n != 1) {
					t.Errorf("%s is there %d times but was never acknowledged nor in doubt", k, n)
				}
			}
			for _, k := range failed {
				if _, err := l.Append(context.Background(), Append{Stream: "retry", Key: k, Entries: []Entry{entry(1, k)}}); err != nil {
					t.Fatal(err)
				}
			}
			present = map[string]int{}
			for _, p := range faultPayloads(t, l) {
				present[p]++
			}
			for _, k := range failed {
				if present[k] != 1 {
					t.Errorf("after retrying %s it is there %d times, want 1", k, present[k])
				}
			}
			t.Logf("%s: %d acknowledged, %d in doubt of which %d had landed", device, len(acked), len(failed), landed)
		})
	}
}

// faultChildEnv marks the child process of TestFaultFullTmpfs, which runs
// in its own mount namespace.
const faultChildEnv = "EVENTLOG_FAULT_TMPFS_CHILD"

// TestFaultFullTmpfs fills a real (small) file system under the log: a
// 256 KiB tmpfs mounted in a private mount namespace (a child process: a Go
// process cannot enter a new namespace itself). It needs either root or
// unprivileged user namespaces, and skips without them.
func TestFaultFullTmpfs(t *testing.T) {
	if os.Getenv(faultChildEnv) != "" {
		faultTmpfsChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFaultFullTmpfs$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), faultChildEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	if os.Geteuid() != 0 {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
	}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err != nil && !errors.As(err, &exit):
		t.Skipf("cannot start a process in a private mount namespace (needs root or user namespaces): %v", err)
	case strings.Contains(string(out), "--- SKIP"):
		t.Skipf("child skipped:\n%s", out)
	case err != nil:
		t.Fatalf("child: %v\n%s", err, out)
	}
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "tmpfs:") {
			t.Log(strings.TrimSpace(line))
		}
	}
}

func faultTmpfsChild(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	// Mounts below must not propagate to the parent's namespace.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		t.Skipf("make mounts private: %v", err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=256k,mode=0700"); err != nil {
		t.Skipf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	path := filepath.Join(mnt, "log.db")
	ctx := context.Background()

	l := openTest(t, path, Options{})
	var want []string
	var failed string
	pad := strings.Repeat("x", 1000)
	for i := 0; failed == ""; i++ {
		if i == 10000 {
			t.Fatal("a 256 KiB file system never filled up")
		}
		p := fmt.Sprintf("%d:%s", i, pad)
		_, err := l.Append(ctx, Append{Stream: fmt.Sprintf("s%d", i%5), Key: fmt.Sprint(i), Entries: []Entry{entry(1, p)}})
		switch {
		case err == nil:
			want = append(want, p)
		case errors.Is(err, ErrBroken) && strings.Contains(err.Error(), syscall.ENOSPC.Error()) && strings.Contains(err.Error(), "reopen"):
			failed = p
		default:
			t.Fatalf("append %d on a filling disk: %v, want ErrBroken naming ENOSPC", i, err)
		}
	}
	if _, err := l.Append(ctx, Append{Stream: "s", Entries: []Entry{entry(1, "refused")}}); !errors.Is(err, ErrBroken) {
		t.Fatalf("append after the failed commit = %v, want ErrBroken", err)
	}
	if got := faultPayloads(t, l); !slices.Equal(got, want) {
		t.Fatalf("the broken log serves %d records, want the %d acknowledged", len(got), len(want))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	info, _ := os.Stat(path)
	t.Logf("tmpfs: full after %d acknowledged appends of 1 KB; file %d bytes", len(want), info.Size())

	// Still full: the log opens (or says clearly why not) and loses nothing.
	l, err := Open(path, Options{})
	switch {
	case err != nil && !strings.Contains(err.Error(), syscall.ENOSPC.Error()):
		t.Fatalf("open on a full disk: %v, want it to succeed or to name ENOSPC", err)
	case err != nil:
		t.Logf("tmpfs: open on the full disk: %v", err)
	default:
		if got := faultPayloads(t, l); !slices.Equal(got, want) {
			t.Fatalf("reopened on a full disk: %d records, want %d", len(got), len(want))
		}
		t.Logf("tmpfs: opened on the full disk and served all %d records", len(want))
		l.Close()
	}

	// Space comes back.
	if err := syscall.Mount("", mnt, "", syscall.MS_REMOUNT, "size=16m"); err != nil {
		t.Fatalf("grow the tmpfs: %v", err)
	}
	l = openTest(t, path, Options{})
	got := faultPayloads(t, l)
	if !slices.Equal(got, want) {
		t.Fatalf("after space came back: %d records, want the %d acknowledged (the failed commit must not be there)", len(got), len(want))
	}
	if err := l.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprint(len(want))
	if res, err := l.Append(ctx, Append{Stream: "s", Key: key, Entries: []Entry{entry(1, failed)}}); err != nil || res.Duplicate {
		t.Fatalf("retry of the failed append: %+v %v", res, err)
	}
	for i := range 300 {
		if _, err := l.Append(ctx, Append{Stream: "after", Entries: []Entry{entry(1, fmt.Sprintf("after-%d:%s", i, pad))}}); err != nil {
			t.Fatalf("append %d after space came back: %v", i, err)
		}
	}
	if err := l.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(collect(t, l, 0)); n != len(want)+301 {
		t.Fatalf("%d records at the end, want %d", n, len(want)+301)
	}
}
