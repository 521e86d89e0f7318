package replay

import (
	"strings"
	"syscall"
	"unsafe"

	"github.com/delegations/delegations/projection/artifact"
)

// sys is what fileReader.fast keeps open: the data directory and the
// session directories it read from last.
type sys struct {
	name     []byte             // the file name fast opens, NUL-terminated
	data     int                // the data directory, open once sessions is not nil (fd 0 is a valid descriptor)
	sessions map[sessionDir]int // its open directory
}

// sessionDir names a session directory: a key that costs no allocation,
// unless the directory is opened.
type sessionDir struct{ project, root string }

// maxSessionDirs bounds the session directories a reader keeps open.
const maxSessionDirs = 256

// fast reads artifact name in the session directory project/root, the
// directories kept open, with three system calls (open, pread, close) and
// no stat: it reports true only for a file of exactly size bytes, and
// leaves anything else (missing, larger, smaller, not a regular file, an
// error) to artifact.Read, which says what is wrong. What artifact.Read
// refuses stays refused: a link is not followed, the open does not block
// on a FIFO and the pread of one fails (a device node takes privileges to
// make), and a pread of one byte more than size that returns size bytes
// has met the end of a regular file, of at most artifact.MaxSize bytes.
// The bytes are valid until the next call.
func (fr *fileReader) fast(project, root, name string, size int64) ([]byte, bool) {
	if size <= 0 || size > artifact.MaxSize {
		return nil, false
	}
	dir, ok := fr.session(project, root)
	if !ok {
		return nil, false
	}
	// The name, NUL-terminated in a buffer kept (syscall.Openat allocates
	// a copy of it per call); one with a NUL inside names another file.
	if strings.IndexByte(name, 0) >= 0 {
		return nil, false
	}
	fr.name = append(append(fr.name[:0], name...), 0)
	r, _, errno := syscall.Syscall6(syscall.SYS_OPENAT, uintptr(dir), uintptr(unsafe.Pointer(&fr.name[0])),
		syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0, 0, 0)
	if errno != 0 {
		return nil, false
	}
	fd := int(r)
	defer syscall.Close(fd)
	if want := int(size) + 1; cap(fr.buf) < want {
		fr.buf = make([]byte, want)
	}
	n, err := syscall.Pread(fd, fr.buf[:size+1], 0)
	if err != nil || n != int(size) {
		return nil, false
	}
	return fr.buf[:n], true
}

// session returns the open session directory project/root.
func (fr *fileReader) session(project, root string) (int, bool) {
	key := sessionDir{project, root}
	if fd, ok := fr.sessions[key]; ok {
		return fd, true
	}
	if fr.sessions == nil {
		fd, err := syscall.Open(fr.dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return 0, false
		}
		fr.data, fr.sessions = fd, map[sessionDir]int{}
	}
	const flags = syscall.O_RDONLY | syscall.O_DIRECTORY | syscall.O_NOFOLLOW | syscall.O_CLOEXEC
	p, err := syscall.Openat(fr.data, project, flags, 0)
	if err != nil {
		return 0, false
	}
	fd, err := syscall.Openat(p, root, flags, 0)
	syscall.Close(p)
	if err != nil {
		return 0, false
	}
	if len(fr.sessions) >= maxSessionDirs {
		for k, old := range fr.sessions {
			syscall.Close(old)
			delete(fr.sessions, k)
			break
		}
	}
	fr.sessions[sessionDir{strings.Clone(project), strings.Clone(root)}] = fd // not the record's strings: they share its payload
	return fd, true
}

func (fr *fileReader) close() {
	for _, fd := range fr.sessions {
		syscall.Close(fd)
	}
	if fr.sessions != nil {
		syscall.Close(fr.data)
	}
}
