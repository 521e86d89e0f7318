package replay

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestFastRegularFilesOnly: the cheap read without a stat takes a regular
// file of exactly the size expected and nothing else, so artifact.Read
// sees (and words) every other case: a larger or smaller file, a link, a
// directory, and a FIFO whose writer wrote the very bytes expected, which
// it leaves unread.
func TestFastRegularFilesOnly(t *testing.T) {
	dir := t.TempDir()
	sess := filepath.Join(dir, "p", "r")
	if err := os.MkdirAll(filepath.Join(sess, "d.md"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sess, "a.md"), []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.md", filepath.Join(sess, "l.md")); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(sess, "f.md")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := syscall.Open(fifo, syscall.O_RDWR|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(w)
	if _, err := syscall.Write(w, []byte("hello")); err != nil {
		t.Fatal(err)
	}

	fr := &fileReader{dir: dir}
	defer fr.close()
	if b, ok := fr.fast("p", "r", "a.md", 5); !ok || string(b) != "hello" {
		t.Errorf("regular file: %q, %v", b, ok)
	}
	for _, c := range []struct {
		name string
		size int64
	}{{"a.md", 4}, {"a.md", 6}, {"a.md", 0}, {"l.md", 5}, {"d.md", 5}, {"f.md", 5}, {"missing.md", 5}} {
		if b, ok := fr.fast("p", "r", c.name, c.size); ok {
			t.Errorf("%s of %d bytes: read %q", c.name, c.size, b)
		}
	}
	buf := make([]byte, 16)
	if n, err := syscall.Read(w, buf); err != nil || string(buf[:n]) != "hello" {
		t.Errorf("the FIFO holds %q, %v; want its bytes left unread", buf[:n], err)
	}
}
