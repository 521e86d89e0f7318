package eventlog

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fillMapped writes a log of about 40 MiB of records whose payloads lie in
// the events bucket's leaves, and closes it.
func fillMapped(t *testing.T) (path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "log.db")
	l := openTest(t, path, Options{})
	payload := string(bytes.Repeat([]byte("x"), InlineLen-100))
	for i := range 20 {
		a := Append{Stream: fmt.Sprint("s", i)}
		for range 1000 {
			a.Entries = append(a.Entries, entry(1, payload))
		}
		mustAppend(t, l, a)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// withBound sets mappedBound for the rest of the test.
func withBound(t *testing.T, n int64) {
	t.Cleanup(SetMappedBound(n))
}

func resident(t *testing.T) int64 {
	t.Helper()
	n, ok := fileResident()
	if !ok {
		t.Skip("/proc/self/statm cannot be read")
	}
	return n
}

// TestScanReleasesMappedPages: a Scan of a 40 MiB log leaves the process
// holding most of it mapped when nothing drops the pages, and under a bound
// of 8 MiB more than before it started when the rounds drop them.
func TestScanReleasesMappedPages(t *testing.T) {
	path := fillMapped(t)
	scan := func(bound int64) (growth, peak int64) {
		l := openTest(t, path, Options{})
		defer l.Close()
		base := resident(t)
		withBound(t, base+bound)
		n := 0
		err := l.Scan(1, func(r *Record) bool {
			if n++; n%256 == 0 {
				peak = max(peak, resident(t)-base)
			}
			return true
		})
		if err != nil || n != 20_000 {
			t.Fatalf("Scan read %d records: %v", n, err)
		}
		return resident(t) - base, peak
	}
	const MiB = 1 << 20
	if growth, _ := scan(1 << 62); growth < 30*MiB {
		t.Fatalf("without a bound, a scan of 40 MiB grew the mapped memory by %d MiB: nothing to show", growth/MiB)
	}
	growth, peak := scan(8 * MiB)
	if growth > 12*MiB || peak > 16*MiB {
		t.Fatalf("under a bound of 8 MiB, a scan of 40 MiB grew the mapped memory by %d MiB (at most %d MiB while it ran)", growth/MiB, peak/MiB)
	}
}

// TestOpenReleasesMappedPages: the page walk of a writable Open reads
// every page of the file through a map of its own; its peak resident
// memory (VmHWM, reset before the open) stays near the bound.
func TestOpenReleasesMappedPages(t *testing.T) {
	path := fillMapped(t)
	open := func(bound int64) (growth int64) {
		base := resident(t)
		withBound(t, base+bound)
		if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
			t.Skipf("cannot reset the peak resident memory: %v", err)
		}
		before := hwm(t)
		l := openTest(t, path, Options{})
		growth = hwm(t) - before
		l.Close()
		return growth
	}
	const MiB = 1 << 20
	if growth := open(1 << 62); growth < 30*MiB {
		t.Fatalf("without a bound, opening a 40 MiB log grew the peak resident memory by %d MiB: nothing to show", growth/MiB)
	}
	if growth := open(8 * MiB); growth > 20*MiB {
		t.Fatalf("under a bound of 8 MiB, opening a 40 MiB log grew the peak resident memory by %d MiB", growth/MiB)
	}
}

// hwm is the process's peak resident memory (VmHWM) in bytes.
func hwm(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Skip("no VmHWM in /proc/self/status")
	return 0
}

// TestOpenLeavesPagesOfTheirOwn: opening a log that is out of the page
// cache walks every page of it, and leaves what it read cached in pages
// of their own, not in the large folios readahead would allocate: writing
// one page of the file then dirties that page alone, as the process's
// write_bytes (which counts whole folios) shows. On kernels whose page
// cache has no large folios for the file system it holds either way.
func TestOpenLeavesPagesOfTheirOwn(t *testing.T) {
	path := fillMapped(t)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Skipf("cannot drop the file's cached pages: %v", err)
	}
	openTest(t, path, Options{}).Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite (with the bytes they hold) one page in every 64, after
	// fdatasync has cleaned those the open wrote.
	if err := datasync(f); err != nil {
		t.Fatal(err)
	}
	page := make([]byte, os.Getpagesize())
	before := writeBytes(t)
	n := 0
	for off := int64(2 * len(page)); off+int64(len(page)) <= fi.Size(); off += 64 * int64(len(page)) {
		if _, err := f.ReadAt(page, off); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(page, off); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if got, want := writeBytes(t)-before, int64(n*len(page)); got != want {
		t.Errorf("rewriting %d pages dirtied %d bytes, want %d: the open left the file cached in large folios", n, got, want)
	}
}

// writeBytes returns the bytes this process has dirtied in the page cache
// so far (/proc/self/io write_bytes: whole folios).
func writeBytes(t *testing.T) int64 {
	t.Helper()
	io, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Skipf("/proc/self/io: %v", err)
	}
	for line := range strings.Lines(string(io)) {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Skip("/proc/self/io has no write_bytes")
	return 0
}
