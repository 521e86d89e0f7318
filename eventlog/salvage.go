package eventlog

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
)

// Salvaged is what Salvage found in a damaged file.
type Salvaged struct {
	// Records holds every record that passed its checksum, one per
	// sequence number, in order. Gaps are records that were not found.
	Records []Record
	// Reachable counts the records found through the tree of the newest
	// valid meta page; the rest were found by scanning leaf pages.
	Reachable int
	// Conflicts lists sequence numbers for which two different intact
	// records were found outside the tree (a commit whose outcome was
	// unknown may leave one); the first found is in Records.
	Conflicts []uint64
	// ChunkConflicts lists the chunked records in Records for which a
	// chunk copy that is not theirs was found under one of their chunks'
	// keys and passed over: a chunk of a commit whose outcome was unknown
	// (another record with the same sequence number), or a damaged copy.
	// StaleChunks counts those copies. A chunk's checksum is in its record
	// (format 2: bound to its payload's hash), so such a copy can never be
	// taken for the record's.
	ChunkConflicts []uint64
	StaleChunks    int
	// Damage lists what is wrong with the file's structure.
	Damage []error
	// PageSize is the page size used to scan (0 when none fit).
	PageSize int
}

// Lost returns the sequence numbers below the last salvaged record that
// were not salvaged. Records after the last salvaged one cannot be known.
func (s *Salvaged) Lost() []uint64 {
	var lost []uint64
	want := uint64(1)
	for _, r := range s.Records {
		for ; want < r.Seq; want++ {
			lost = append(lost, want)
		}
		want = r.Seq + 1
	}
	return lost
}

// Salvage reads every intact record from the bbolt file at path without
// trusting bbolt's tree: first through the tree of the newest valid meta
// page, checking every page as it goes and skipping damaged subtrees, then
// by scanning every page of the file for leaf pages and taking each
// key/value pair whose key is 8 bytes and whose value decodes as the record
// of that sequence number with a valid checksum. The checksum covers the
// sequence number, so a pair from another bucket cannot pass as a record.
//
// Caveat: a page freed by a later commit can still hold old copies of
// records; they are identical to the live ones (records never change), so
// they are harmless, and they are what brings back records whose branch
// pages are damaged. Records of a commit whose outcome was unknown (see
// ErrBroken) and that never became part of the tree can be found too: they
// are taken only where the tree has nothing for that sequence number. Their
// chunks can be found too, under the same keys as the live record's: every
// copy found is a candidate, and a record takes only chunks that pass the
// checksums it holds (format 2: bound to its own payload hash) (ChunkConflicts says where others
// were passed over), so whichever copy the scan meets first, an intact
// record is never lost to another's chunks.
//
// Salvage opens the file read-only and takes no lock: the caller makes sure
// no process writes to it. It holds every record it finds in memory, and a
// slice of the mapped file for every chunk-shaped pair.
func Salvage(path string) (*Salvaged, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("salvage %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("salvage %s: %w", path, err)
	}
	out := &Salvaged{}
	pf, err := readLayout(f, fi.Size())
	if err != nil {
		out.Damage = append(out.Damage, err)
		return out, nil
	}
	defer pf.mapFile(f, fi.Size())()
	if err := guard("salvage", func() error { salvage(pf, fi.Size(), out); return nil }); err != nil {
		return nil, fmt.Errorf("salvage %s: %w", path, err)
	}
	return out, nil
}

func salvage(pf *pageFile, size int64, out *Salvaged) {
	found := map[uint64]Record{}
	// A chunked record's payload is in the chunks bucket: every pair with
	// a chunk's shape, from the tree and from every leaf page, is kept as
	// a candidate for its key, and chunked records are decoded once every
	// page was read. A chunk's checksum is in its record (format 2: bound
	// to its payload's hash), so only record seq's own chunks pass as its chunks: a copy
	// left by a failed commit of another record seq, or a damaged one, is
	// passed over and counted in StaleChunks. Candidates are slices of the
	// mapped file, one per copy (copies of their page only where the file
	// could not be mapped): memory goes with the number of chunk-shaped
	// pairs in the file, a slice header and a map entry each (about 50
	// bytes), not with their size.
	chunks := map[[chunkKeyLen]byte][][]byte{}
	// take passes the record of e to keep now, or later when its payload
	// is in chunks.
	take := func(e elem, keep func(Record) bool, later *[]elem) {
		if len(e.key) == chunkKeyLen {
			k := [chunkKeyLen]byte(e.key)
			// The scan meets every page the tree walk read: in the
			// mapped file, the same copy.
			same := func(v []byte) bool { return &v[0] == &e.value[0] }
			if chunkShaped(e.key, e.value) && !slices.ContainsFunc(chunks[k], same) {
				chunks[k] = append(chunks[k], e.value)
			}
			return
		}
		if len(e.key) != 8 {
			return
		}
		seq := binary.BigEndian.Uint64(e.key)
		r, chunked, err := decodeHead(seq, e.value)
		switch {
		case err != nil || seq == 0:
		case chunked.length > 0:
			*later = append(*later, e)
		default:
			keep(r)
		}
	}
	staleChunks := map[uint64]int{}
	assemble := func(later []elem, keep func(Record) bool) {
		for _, e := range later {
			seq := binary.BigEndian.Uint64(e.key)
			r, chunked, _ := decodeHead(seq, e.value)
			stale := 0
			src := func(seq uint64, i uint32) []byte {
				var own []byte
				for _, v := range chunks[[chunkKeyLen]byte(chunkKey(seq, i))] {
					switch {
					case !chunked.holds(seq, int(i), v):
						stale++
					case own == nil:
						own = v
					}
				}
				return own
			}
			var err error
			if r.Payload, err = chunked.assemble(seq, src); err == nil && keep(r) {
				staleChunks[seq] = stale
			}
		}
	}
	keepFound := func(r Record) bool { found[r.Seq] = r; return true }
	var treeLater []elem
	if pf.cur.err == nil {
		out.Damage = pf.check(func(path []string, e elem) {
			if len(path) == 1 && path[0] == string(bucketEvents) || len(path) == 2 && path[0] == string(bucketChunks) {
				take(e, keepFound, &treeLater)
			}
		})
	} else {
		out.Damage = append(out.Damage, pf.cur.err)
	}
	// Scan every page for leaves, at the meta's page size or, with both
	// metas gone, at each candidate size until one finds records.
	sizes := candidatePageSizes
	if pf.cur.err == nil {
		sizes = []int{pf.pageSize}
	}
	for _, ps := range sizes {
		pf.pageSize = ps
		extra := map[uint64]Record{}
		conflicts := map[uint64]bool{}
		if pf.cur.err != nil {
			// No tree: every candidate came from scanning at another
			// page size.
			clear(chunks)
		}
		keepScanned := func(r Record) bool {
			if _, live := found[r.Seq]; live {
				return false
			}
			if prev, dup := extra[r.Seq]; dup {
				if !sameRecord(prev, r) {
					conflicts[r.Seq] = true
				}
				return false
			}
			extra[r.Seq] = r
			return true
		}
		var scanLater []elem
		pages := uint64(size) / uint64(ps)
		for id := uint64(2); id < pages; id++ {
			b, err := pf.page(id, pages)
			if err != nil {
				continue
			}
			var visit func(b []byte, depth int)
			visit = func(b []byte, depth int) {
				isLeaf, es, err := elements(id, b, nil)
				if err != nil || !isLeaf {
					return
				}
				for _, e := range es {
					if e.flags&flagBucket != 0 {
						// An inline bucket holds its leaf in the value.
						if depth < 4 && len(e.value) > bucketHdrLen && le.Uint64(e.value) == 0 {
							visit(e.value[bucketHdrLen:], depth+1)
						}
						continue
					}
					take(e, keepScanned, &scanLater)
				}
			}
			visit(b, 0)
		}
		// The tree's chunked records, now that every chunk is known: they
		// are live, whatever the scan found for them.
		assemble(treeLater, func(r Record) bool {
			found[r.Seq] = r
			delete(extra, r.Seq)
			delete(conflicts, r.Seq)
			return true
		})
		treeLater = nil
		out.Reachable = len(found)
		assemble(scanLater, keepScanned)
		if len(extra) == 0 && len(found) == 0 && pf.cur.err != nil {
			continue
		}
		for seq, r := range extra {
			found[seq] = r
		}
		for seq := range conflicts {
			out.Conflicts = append(out.Conflicts, seq)
		}
		slices.Sort(out.Conflicts)
		for seq, n := range staleChunks {
			if _, ok := found[seq]; ok && n > 0 {
				out.ChunkConflicts = append(out.ChunkConflicts, seq)
				out.StaleChunks += n
			}
		}
		slices.Sort(out.ChunkConflicts)
		out.PageSize = ps
		break
	}
	for _, r := range found {
		out.Records = append(out.Records, r)
	}
	slices.SortFunc(out.Records, func(a, b Record) int { return cmp.Compare(a.Seq, b.Seq) })
}

func sameRecord(a, b Record) bool {
	return a.Kind == b.Kind && a.Stream == b.Stream && a.Time.Equal(b.Time) && a.Key == b.Key && string(a.Payload) == string(b.Payload)
}
