package eventlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"syscall"
)

// This file reads bbolt's on-disk format directly, with pread and bounds
// checks on every field, never through bbolt's mmap. bbolt trusts its pages:
// a flipped byte in a branch page sends it to a page past the end of the
// map (a fault, not a panic) or into an assertion. Checking the file this
// way first is what makes it safe to hand the file to bbolt for writing,
// and reading leaf pages this way is how Salvage finds records when the
// tree above them is damaged.
//
// The layout is bbolt's (go.etcd.io/bbolt/internal/common), in the byte
// order of the machine that wrote the file; bbolt files are not portable
// across byte orders, and neither is this reader (little-endian assumed).

const (
	pageHeaderLen = 16 // id u64, flags u16, count u16, overflow u32
	elemLen       = 16 // a branch or leaf element
	bucketHdrLen  = 16 // root u64, sequence u64

	flagBranch   = 0x01
	flagLeaf     = 0x02
	flagMeta     = 0x04
	flagFreelist = 0x10
	flagBucket   = 0x01 // leaf element flag: the value is a bucket

	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	noFreelist     = ^uint64(0)
	metaChecksumAt = 56 // the meta's checksum covers the bytes before it
	maxTreeDepth   = 64
)

var le = binary.LittleEndian

// DamageError reports damage to the log file's structure: a meta page, a
// branch or leaf page, the freelist, or the file's length. Page is the page
// number when one is to blame, else NoPage. It wraps ErrCorrupt.
type DamageError struct {
	Page   uint64
	Reason string
}

// NoPage is DamageError.Page when the damage is not in one page.
const NoPage = ^uint64(0)

func (e *DamageError) Error() string {
	if e.Page == NoPage {
		return "log file damaged: " + e.Reason
	}
	return fmt.Sprintf("log file damaged: page %d: %s", e.Page, e.Reason)
}

func (e *DamageError) Unwrap() error { return ErrCorrupt }

func damage(page uint64, format string, args ...any) error {
	return &DamageError{Page: page, Reason: fmt.Sprintf(format, args...)}
}

// meta is one decoded meta page.
type meta struct {
	pageSize                   uint32
	root, freelist, pgid, txid uint64
	err                        error // why this meta is not valid
}

func parseMeta(page uint64, b []byte) meta {
	if len(b) < pageHeaderLen+64 {
		return meta{err: damage(page, "meta page is cut short")}
	}
	m := b[pageHeaderLen:]
	out := meta{
		pageSize: le.Uint32(m[8:]),
		root:     le.Uint64(m[16:]),
		freelist: le.Uint64(m[32:]),
		pgid:     le.Uint64(m[40:]),
		txid:     le.Uint64(m[48:]),
	}
	h := fnv.New64a()
	h.Write(m[:metaChecksumAt])
	switch {
	case le.Uint32(m) != boltMagic:
		out.err = damage(page, "meta page has no bbolt magic number (zeroed or overwritten)")
	case le.Uint32(m[4:]) != boltVersion:
		out.err = damage(page, "meta page has format version %d, want %d", le.Uint32(m[4:]), boltVersion)
	case le.Uint64(m[metaChecksumAt:]) != h.Sum64():
		out.err = damage(page, "meta page fails its checksum")
	case out.pageSize < 512 || out.pageSize > 1<<20 || out.pageSize&(out.pageSize-1) != 0:
		out.err = damage(page, "meta page gives an impossible page size %d", out.pageSize)
	case le.Uint16(b[8:]) != flagMeta:
		out.err = damage(page, "meta page is not marked as a meta page")
	}
	return out
}

// pageFile is a bbolt file read with pread, or through a private read-only
// map of it (data) when the caller made one: the same bounds checks, no
// copies.
type pageFile struct {
	r        io.ReaderAt
	data     []byte
	file     *os.File // set by mapFile: the file whose pages are read ahead
	ahead    []uint64 // bit i: readahead chunk i has been asked for
	size     int64
	pageSize int
	read     int // bytes of data read since the last releaseMap
	metas    [2]meta
	cur      meta // the newest valid meta; cur.err is set when neither is valid
}

// candidatePageSizes are tried when neither meta page names the size.
var candidatePageSizes = []int{4096, 8192, 16384, 65536, 2048, 1024, 512, 32768}

// readLayout reads the meta pages. It fails only when the file cannot be
// read at all or is too short to hold them.
func readLayout(r io.ReaderAt, size int64) (*pageFile, error) {
	pf := &pageFile{r: r, size: size}
	if size == 0 {
		return nil, damage(NoPage, "the file is empty (0 bytes)")
	}
	// Meta 0 is at offset 0; meta 1 one page later, wherever that is.
	var head [pageHeaderLen + 64]byte
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return nil, damage(NoPage, "the file is %d bytes, too short for a meta page", size)
	}
	pf.metas[0] = parseMeta(0, head[:])
	sizes := candidatePageSizes
	if pf.metas[0].err == nil {
		sizes = append([]int{int(pf.metas[0].pageSize)}, sizes...)
	}
	pf.metas[1] = meta{err: damage(1, "the file is too short for the second meta page")}
	for _, ps := range sizes {
		if _, err := r.ReadAt(head[:], int64(ps)); err != nil {
			continue
		}
		if m := parseMeta(1, head[:]); m.err == nil && int(m.pageSize) == ps {
			pf.metas[1] = m
			break
		} else if ps == sizes[0] {
			pf.metas[1] = m
		}
	}
	pf.cur = pf.metas[0]
	if m := pf.metas[1]; m.err == nil && (pf.cur.err != nil || m.txid > pf.cur.txid) {
		pf.cur = m
	}
	if pf.cur.err != nil {
		pf.cur.err = damage(NoPage, "both meta pages are damaged (%v; %v)", pf.metas[0].err, pf.metas[1].err)
		return pf, nil
	}
	pf.pageSize = int(pf.cur.pageSize)
	return pf, nil
}

// page reads page id with its overflow pages. It checks that the page is
// inside the file and says it is page id.
func (pf *pageFile) page(id, limit uint64) ([]byte, error) {
	ps := uint64(pf.pageSize)
	if id >= limit {
		return nil, damage(id, "page number is past the end (%d pages)", limit)
	}
	pf.readAhead(id*ps, ps)
	if pf.data != nil {
		if (id+1)*ps > uint64(len(pf.data)) {
			return nil, damage(id, "page is past the end of the file (%d bytes)", pf.size)
		}
		buf := pf.data[id*ps : (id+1)*ps]
		if got := le.Uint64(buf); got != id {
			return nil, damage(id, "page says it is page %d", got)
		}
		ov := uint64(le.Uint32(buf[12:]))
		if ov > 0 && (id+ov >= limit || id+ov < id || (id+ov+1)*ps > uint64(len(pf.data))) {
			return nil, damage(id, "%d overflow pages run past the end (%d pages)", ov, limit)
		}
		pf.readAhead(id*ps, (ov+1)*ps)
		if pf.read += int((ov + 1) * ps); pf.read >= releaseEvery {
			pf.read = 0
			releaseMap(pf.data) // the walk of a large file (mapped.go)
		}
		return pf.data[id*ps : (id+ov+1)*ps], nil
	}
	buf := make([]byte, ps)
	if _, err := pf.r.ReadAt(buf, int64(id*ps)); err != nil {
		return nil, damage(id, "cannot be read: %v (the file is %d bytes)", err, pf.size)
	}
	if got := le.Uint64(buf); got != id {
		return nil, damage(id, "page says it is page %d", got)
	}
	if ov := uint64(le.Uint32(buf[12:])); ov > 0 {
		if id+ov >= limit || id+ov < id {
			return nil, damage(id, "%d overflow pages run past the end (%d pages)", ov, limit)
		}
		pf.readAhead(id*ps, (ov+1)*ps)
		big := make([]byte, (ov+1)*ps)
		if _, err := pf.r.ReadAt(big, int64(id*ps)); err != nil {
			return nil, damage(id, "overflow pages cannot be read: %v", err)
		}
		buf = big
	}
	return buf, nil
}

// elem is one element of a branch or leaf page.
type elem struct {
	flags uint32
	key   []byte
	value []byte // leaf
	child uint64 // branch
}

// elements decodes the elements of a branch or leaf page held in b
// (header included), checking every offset against b. They are appended to
// dst[:0], which the walk reuses per level.
func elements(page uint64, b []byte, dst []elem) (isLeaf bool, out []elem, err error) {
	if len(b) < pageHeaderLen {
		return false, nil, damage(page, "page is cut short")
	}
	flags, count := le.Uint16(b[8:]), int(le.Uint16(b[10:]))
	switch flags {
	case flagBranch:
	case flagLeaf:
		isLeaf = true
	default:
		return false, nil, damage(page, "page has type %#x where a branch or leaf page belongs", flags)
	}
	if pageHeaderLen+count*elemLen > len(b) {
		return isLeaf, nil, damage(page, "%d elements do not fit in the page", count)
	}
	if cap(dst) >= count {
		out = dst[:count]
	} else {
		out = make([]elem, count)
	}
	for i := range out {
		off := pageHeaderLen + i*elemLen
		e := b[off : off+elemLen]
		var pos, ksize, vsize uint64
		if isLeaf {
			out[i].flags = le.Uint32(e)
			pos, ksize, vsize = uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
		} else {
			pos, ksize = uint64(le.Uint32(e)), uint64(le.Uint32(e[4:]))
			out[i].child = le.Uint64(e[8:])
		}
		start := uint64(off) + pos
		if start+ksize+vsize > uint64(len(b)) {
			return isLeaf, nil, damage(page, "element %d points past the end of the page", i)
		}
		out[i].key = b[start : start+ksize]
		if isLeaf {
			out[i].value = b[start+ksize : start+ksize+vsize]
			out[i].child = 0
		} else {
			out[i].flags, out[i].value = 0, nil
		}
		if i > 0 && bytes.Compare(out[i-1].key, out[i].key) >= 0 {
			return isLeaf, nil, damage(page, "keys out of order at element %d", i)
		}
	}
	return isLeaf, out, nil
}

// walker visits the B+trees of every bucket from a meta's root, checking
// the structure as it goes. Damage is reported and the subtree below it
// skipped; the walk goes on.
type walker struct {
	pf     *pageFile
	limit  uint64 // pages below the high water mark that are in the file
	seen   []bool
	report func(error)
	visit  func(bucket []string, e elem)               // leaf elements that are not buckets; may be nil
	onPage func(id uint64, leaf bool, bucket []string) // every sound page; may be nil
	// shallow stops at the root page of every bucket but the root
	// bucket and the views bucket, which hold the other buckets' headers.
	shallow bool
	// scratch holds each level's elements, reused from page to page: no
	// frame shares a level with an active ancestor.
	scratch [][]elem
}

func (w *walker) scratchAt(depth int) []elem {
	for len(w.scratch) <= depth {
		w.scratch = append(w.scratch, nil)
	}
	return w.scratch[depth]
}

func (w *walker) bucket(root uint64, path []string, depth int) {
	w.node(root, path, nil, nil, depth)
}

// node walks page id of the bucket at path; its keys must lie in [lo, hi).
func (w *walker) node(id uint64, path []string, lo, hi []byte, depth int) {
	if depth > maxTreeDepth {
		w.report(damage(id, "the tree is deeper than %d levels (a cycle?)", maxTreeDepth))
		return
	}
	if id < 2 {
		w.report(damage(id, "a bucket points at a meta page"))
		return
	}
	if id < uint64(len(w.seen)) && w.seen[id] {
		w.report(damage(id, "page is referenced twice"))
		return
	}
	b, err := w.pf.page(id, w.limit)
	if err != nil {
		w.report(err)
		return
	}
	for i := id; i < id+uint64(len(b)/w.pf.pageSize); i++ {
		w.seen[i] = true
	}
	isLeaf, es, err := elements(id, b, w.scratchAt(depth))
	if err != nil {
		w.report(err)
		return
	}
	w.scratch[depth] = es[:0]
	if w.onPage != nil {
		w.onPage(id, isLeaf, path)
	}
	if len(es) > 0 {
		if lo != nil && bytes.Compare(es[0].key, lo) < 0 {
			w.report(damage(id, "first key is below its parent's key"))
		}
		if hi != nil && bytes.Compare(es[len(es)-1].key, hi) >= 0 {
			w.report(damage(id, "last key is not below the next key of its parent"))
		}
	}
	if !isLeaf {
		if len(es) == 0 {
			w.report(damage(id, "branch page has no elements"))
		}
		if w.shallow && !(len(path) == 0 || len(path) == 1 && path[0] == string(bucketViews)) {
			return
		}
		for i, e := range es {
			var next []byte
			if i+1 < len(es) {
				next = es[i+1].key
			} else {
				next = hi
			}
			w.node(e.child, path, e.key, next, depth+1)
		}
		return
	}
	w.leaf(id, path, es, depth)
}

func (w *walker) leaf(id uint64, path []string, es []elem, depth int) {
	for _, e := range es {
		if e.flags&flagBucket == 0 {
			if w.visit != nil {
				w.visit(path, e)
			}
			continue
		}
		sub := append(path[:len(path):len(path)], string(e.key))
		if len(e.value) < bucketHdrLen {
			w.report(damage(id, "bucket %q has a %d-byte header", sub, len(e.value)))
			continue
		}
		root := le.Uint64(e.value)
		if root != 0 {
			w.bucket(root, sub, depth+1)
			continue
		}
		// An inline bucket: its one leaf page follows the header.
		isLeaf, inner, err := elements(id, e.value[bucketHdrLen:], nil)
		if err == nil && !isLeaf {
			err = damage(id, "inline bucket %q is not a leaf", sub)
		}
		if err != nil {
			w.report(fmt.Errorf("inline bucket %q: %w", sub, err))
			continue
		}
		w.leaf(id, sub, inner, depth+1)
	}
}

// checkFile checks a bbolt file's structure without trusting it: both meta
// pages, the length against the high water mark, every page reachable from
// the root (ids, types, element bounds, key order, no page used twice) and
// the freelist. It returns every problem found, nil for a sound file.
//
// The file must not change during the check: either no writer holds it, or
// the caller holds a bbolt read transaction whose id is txid (pages it can
// see are not reused while it is open), and then only that transaction's
// meta page is checked, since the other may be being rewritten.
func checkFile(path string, txid uint64) []error {
	f, err := os.Open(path)
	if err != nil {
		return []error{err}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return []error{err}
	}
	pf, err := readLayout(f, fi.Size())
	if err != nil {
		return []error{err}
	}
	defer pf.mapFile(f, fi.Size())()
	var problems []error
	if err := guard("check", func() error {
		problems = pf.checkAs(txid)
		return nil
	}); err != nil {
		problems = append(problems, err)
	}
	return problems
}

func (pf *pageFile) checkAs(txid uint64) []error {
	if txid != 0 {
		for _, m := range pf.metas {
			if m.err == nil && m.txid == txid {
				pf.metas = [2]meta{m, m}
				pf.cur = m
				pf.pageSize = int(m.pageSize)
				return pf.check(nil)
			}
		}
		return nil // a commit rewrote the meta page meanwhile; nothing to say
	}
	return pf.check(nil)
}

func (pf *pageFile) check(visit func(bucket []string, e elem)) []error {
	return pf.walk(visit, nil)
}

func (pf *pageFile) walk(visit func(bucket []string, e elem), onPage func(id uint64, leaf bool, bucket []string)) []error {
	return pf.walkAll(visit, onPage, false)
}

// checkShallow checks what bbolt reads before any record: the meta pages,
// the length, the freelist, the root bucket and the views bucket (every
// bucket's header, and every inline bucket), and each bucket's root page.
// Its cost does not grow with the log. Pages below the buckets' roots are
// read by bbolt unchecked; a damaged one there is a panic or a fault that
// guard turns into an error.
func (pf *pageFile) checkShallow() []error {
	return pf.walkAll(nil, nil, true)
}

func (pf *pageFile) walkAll(visit func(bucket []string, e elem), onPage func(id uint64, leaf bool, bucket []string), shallow bool) []error {
	var problems []error
	report := func(err error) {
		if len(problems) < maxProblems {
			problems = append(problems, err)
		}
	}
	for i, m := range pf.metas {
		if m.err != nil && (i == 0 || pf.metas[0].err == nil) {
			report(m.err)
		}
	}
	if pf.cur.err != nil {
		return []error{pf.cur.err}
	}
	ps := uint64(pf.pageSize)
	hwm := pf.cur.pgid
	inFile := uint64(pf.size) / ps
	if hwm < 3 || hwm > 1<<40 {
		report(damage(NoPage, "the meta page gives an impossible page count %d", hwm))
		return problems
	}
	if inFile < hwm {
		report(damage(NoPage, "the file is %d bytes but holds %d pages of %d bytes (%d bytes): it was cut short", pf.size, hwm, ps, hwm*ps))
	}
	limit := min(hwm, inFile)
	w := &walker{pf: pf, limit: limit, seen: make([]bool, max(limit, 2)), report: report, visit: visit, onPage: onPage, shallow: shallow}
	w.seen[0], w.seen[1] = true, true
	w.bucket(pf.cur.root, nil, 0)
	if fl := pf.cur.freelist; fl != noFreelist {
		reachable := w.seen
		if shallow {
			reachable = make([]bool, len(w.seen)) // not every page was seen
		}
		pf.checkFreelist(fl, limit, reachable, report)
	}
	return problems
}

func (pf *pageFile) checkFreelist(id, limit uint64, reachable []bool, report func(error)) {
	b, err := pf.page(id, limit)
	if err != nil {
		report(fmt.Errorf("freelist: %w", err))
		return
	}
	if f := le.Uint16(b[8:]); f != flagFreelist {
		report(damage(id, "the freelist page has type %#x", f))
		return
	}
	if reachable[id] {
		report(damage(id, "the freelist page is also used by a bucket"))
		return
	}
	n, at := uint64(le.Uint16(b[10:])), uint64(pageHeaderLen)
	if n == 0xFFFF {
		n, at = le.Uint64(b[pageHeaderLen:]), pageHeaderLen+8
	}
	if n > uint64(len(b)) || at+n*8 > uint64(len(b)) {
		report(damage(id, "the freelist holds %d ids that do not fit in it", n))
		return
	}
	freed := map[uint64]bool{}
	for i := range n {
		p := le.Uint64(b[at+i*8:])
		switch {
		case p < 2 || p >= limit:
			report(damage(id, "the freelist names page %d, outside the file's %d pages", p, limit))
			return
		case freed[p]:
			report(damage(p, "freed twice"))
		case reachable[p]:
			report(damage(p, "in use by a bucket and also free"))
		}
		freed[p] = true
	}
}

// joinDamage joins problems into one error, or returns nil.
func joinDamage(problems []error) error {
	if len(problems) == 0 {
		return nil
	}
	return errors.Join(problems...)
}

// releaseEvery is how many bytes of its map a walk reads between two
// looks at the process's resident memory (mapped.go). A fault maps up to
// 16 pages of the page cache around the one read (Linux's fault-around),
// so the walk, which goes in tree order, may map 16 times what it reads:
// 4 MiB at most between two looks.
const releaseEvery = 256 << 10

// mapFile maps f (size bytes, pf's file) read-only for pf, and returns
// the unmap. Reading the map faults only if the file shrinks meanwhile,
// which the lock the callers hold rules out for our own processes; guard
// turns such a fault into an error anyway. Without a map (size 0, or mmap
// failing) pages are read with pread.
//
// The file is read in no order the kernel's readahead can follow (a walk
// goes in tree order), and readahead would leave the pages it reads in
// large folios (up to 2 MiB on Linux 6.18's ext4), where they stay: a
// commit that later writes one page of such a folio marks the whole folio
// dirty, and fdatasync's CPU follows the folio's size, not the page's.
// After the walk of a cold file at open, a store of 1M events paid 1.3-1.6
// times the CPU per lifecycle of an empty one (BenchmarkLifecyclesHistory),
// its commits dirtying 16-34 MB of folios per lifecycle for 0.14 MB of
// pages. So readahead is turned off for the walk (as bbolt turns it off
// for its own map), and readAhead asks for each chunk of the file the walk
// reaches instead, which the kernel reads into pages of their own.
func (pf *pageFile) mapFile(f *os.File, size int64) (unmap func()) {
	pf.file = f
	pf.ahead = make([]uint64, (size/readAheadChunk+64)/64)
	adviseRandom(f, nil)
	if size <= 0 || size != int64(int(size)) {
		return func() {}
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return func() {}
	}
	adviseRandom(nil, data)
	pf.data = data
	return func() { _ = syscall.Munmap(data) }
}

// readAheadChunk is how much of the file readAhead asks for at once (the
// most the kernel reads in one go), and readAheadNext how many chunks
// after the one reached with it: a walk goes mostly forward in the file,
// whose trees were appended: asking ahead took a cold open of 1M events
// (a 287 MB file) from 1.0-1.2 s to 0.6-1.1 s here, against 0.4-0.8 s
// with the kernel's readahead, whose large folios also map faster.
const (
	readAheadChunk = 2 << 20
	readAheadNext  = 4
)

// readAhead asks the kernel to read the chunks of the file that hold n
// bytes from off, and the readAheadNext after them, unless it has asked
// for them before.
func (pf *pageFile) readAhead(off, n uint64) {
	if pf.file == nil {
		return
	}
	for c := off / readAheadChunk; c <= (off+n-1)/readAheadChunk+readAheadNext && c/64 < uint64(len(pf.ahead)); c++ {
		if pf.ahead[c/64]&(1<<(c%64)) == 0 {
			pf.ahead[c/64] |= 1 << (c % 64)
			prefetch(pf.file, int64(c*readAheadChunk), readAheadChunk)
		}
	}
}

// walkCounting checks the file and counts the entries of each top-level
// bucket.
func (pf *pageFile) walkCounting(counts map[string]int) []error {
	var cur string
	n := 0
	problems := pf.check(func(bucket []string, _ elem) {
		if len(bucket) != 1 {
			return
		}
		if bucket[0] != cur {
			if cur != "" {
				counts[cur] += n
			}
			cur, n = bucket[0], 0
		}
		n++
	})
	if cur != "" {
		counts[cur] += n
	}
	return problems
}
