package eventlog

import (
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// The log's file is mapped into the process (bbolt maps it shared and
// read-only, and the page walk of pages.go maps it again), and every page
// a reader touches stays in the process's page tables until the mapping
// goes: a scan of a 1 GB log left a daemon 1 GB resident, page cache
// counted as its own memory (RssFile), although none of it is the
// process's to lose. Dropping the page-table entries of a shared file
// mapping (madvise MADV_DONTNEED on Linux) leaves the pages in the page
// cache, and the next touch maps them again as a minor fault with the same
// contents: so the long readers (Scan, Records, Verify's rounds and page
// walk, the projectors' catch-up, the scratch file's rebuild), every read
// transaction and every commit drop the mapping's pages once the process
// holds more than mappedBound of file-backed memory, and the process stays
// bounded whatever it reads.
//
// The drop happens inside a transaction of the file: bbolt does not remap
// it while a read transaction is open (its mmaplock), nor during a write
// transaction before its commit, so the map's start (DB.Info) and the
// transaction's size, which the map covers, stay valid.

// mappedBound is the process's file-backed resident memory past which the
// mappings' pages are dropped. Each drop costs every page read again
// afterwards a minor fault (and the kernel maps up to 16 pages around each
// fault, of which a lookup uses one): a verify of a million events takes
// five times the faults without the drops, about 15% of its time. The
// binary's own pages count too (about 20 MiB for the daemon).
// (A variable for the tests.)
var mappedBound int64 = 64 << 20

// release drops the pages of tx's file from the process's page tables if
// the process is over mappedBound. tx must be open, and a writable one not
// yet committing: bbolt remaps the file only in a commit (when it
// allocates pages past the map), so until then the map covers tx.Size().
func release(tx *bolt.Tx) {
	if overMapped() {
		dropRange(tx.DB().Info().Data, uintptr(tx.Size()))
	}
}

// releaseMap drops the pages of a map of the process's own (mapFile) if
// the process is over mappedBound.
func releaseMap(data []byte) {
	if len(data) > 0 && overMapped() {
		dropRange(uintptr(unsafe.Pointer(unsafe.SliceData(data))), uintptr(len(data)))
	}
}
