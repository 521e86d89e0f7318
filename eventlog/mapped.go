package eventlog

import (
	"sync/atomic"
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
var mappedBound atomic.Int64

func init() { mappedBound.Store(DaemonMappedBound) }

// DaemonMappedBound is mappedBound in a process that may hold other
// memory beside the log's pages: the daemon, whose views, requests and
// caches must fit beside them in its resident memory goal (README, issue
// 13: under 256 MiB).
const DaemonMappedBound = 64 << 20

// CommandMappedBound is mappedBound for a process that only replays the
// log (the replay command without a daemon), whose heap stays under about
// 40 MiB (not verify's: it maps the scratch file of its views too, and its
// heap is larger; at this bound it reached 258-313 MiB). A replay's scan
// reads the log's leaf pages in an order that jumps back and forth over
// the file, so the fault-around pages of one fault are often dropped
// before the scan reaches them; at twice the bound a 1M-event replay takes
// 27,000 faults instead of 50,000, and the drops, each of the whole map,
// half as many.
const CommandMappedBound = 128 << 20

// SetMappedBound sets the process's bound on file-backed resident memory
// past which the log's mapped pages are dropped (DaemonMappedBound until
// then), and returns what restores the bound before it.
func SetMappedBound(n int64) (restore func()) {
	prev := mappedBound.Swap(n)
	return func() { mappedBound.Store(prev) }
}

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
