package eventlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Damaged files: every way of opening and reading them ends in an error
// wrapping ErrCorrupt (or a sound result), never a panic or a fault, and
// nothing that opening or reading does loses a record that passed its
// checksum before.

// damageLog writes a log big enough for the events bucket to have branch
// pages, closes it and returns its path.
func damageLog(t testing.TB, records int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "log.db")
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= records; i++ {
		payload := fmt.Sprintf("payload %04d %s", i, strings.Repeat("x", 60))
		key := ""
		if i%10 == 0 {
			key = fmt.Sprint("key-", i)
		}
		if _, err := l.Append(context.Background(), Append{Stream: fmt.Sprint("stream-", i%17), Key: key, Entries: []Entry{entry(uint16(i%5+1), payload)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// livePages returns the pages of the events bucket reachable from the
// newest meta, by kind, and the page size.
func livePages(t testing.TB, path string) (branches, leaves []uint64, pageSize int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	pf, err := readLayout(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	problems := pf.walk(nil, func(id uint64, leaf bool, bucket []string) {
		if len(bucket) != 1 || bucket[0] != string(bucketEvents) {
			return
		}
		if leaf {
			leaves = append(leaves, id)
		} else {
			branches = append(branches, id)
		}
	})
	if len(problems) > 0 {
		t.Fatalf("the undamaged file has problems: %v", problems)
	}
	return branches, leaves, pf.pageSize
}

// intact counts the records that pass their checksum, read without
// trusting bbolt (Salvage).
func intact(t testing.TB, path string) map[uint64]bool {
	t.Helper()
	s, err := Salvage(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]bool{}
	for _, r := range s.Records {
		out[r.Seq] = true
	}
	return out
}

var damageLogs = map[int][]byte{}

// damageCopy returns a fresh copy of a damageLog of n records, built once
// per test binary (hundreds of durable appends per case add up).
func damageCopy(t *testing.T, n int) string {
	t.Helper()
	raw, ok := damageLogs[n]
	if !ok {
		var err error
		if raw, err = os.ReadFile(damageLog(t, n)); err != nil {
			t.Fatal(err)
		}
		damageLogs[n] = raw
	}
	path := filepath.Join(t.TempDir(), "log.db")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type damageCase struct {
	name string
	// damage changes the file; writable says whether a writer may open it
	// (the damage cannot make a write lose records).
	damage   func(t *testing.T, path string)
	writable bool
}

func damageCases() []damageCase {
	edit := func(fn func(raw []byte, pageSize int, branches, leaves []uint64) []byte) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			branches, leaves, ps := livePages(t, path)
			if len(branches) == 0 || len(leaves) < 3 {
				t.Fatalf("want branch pages and several leaves in the events bucket, have %d and %d", len(branches), len(leaves))
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, fn(raw, ps, branches, leaves), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	truncate := func(frac func(size, ps int) int) func(t *testing.T, path string) {
		return edit(func(raw []byte, ps int, _, _ []uint64) []byte { return raw[:frac(len(raw), ps)] })
	}
	hwm := func(raw []byte) int {
		pf, err := readLayout(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			panic(err)
		}
		return int(pf.cur.pgid) * pf.pageSize
	}
	return []damageCase{
		{name: "truncated to half", damage: edit(func(raw []byte, ps int, _, _ []uint64) []byte { return raw[:hwm(raw)/2/ps*ps] })},
		{name: "truncated by one page", damage: edit(func(raw []byte, ps int, _, _ []uint64) []byte { return raw[:hwm(raw)-ps] })},
		{name: "truncated mid-page", damage: edit(func(raw []byte, ps int, _, _ []uint64) []byte { return raw[:hwm(raw)-ps-ps/2] })},
		{name: "truncated to three pages", damage: truncate(func(_, ps int) int { return 3 * ps })},
		{name: "truncated inside the meta pages", damage: truncate(func(_, ps int) int { return ps + 100 })},
		{name: "flipped bytes in a branch page", damage: edit(func(raw []byte, ps int, branches, _ []uint64) []byte {
			p := int(branches[0]) * ps
			for i := p + pageHeaderLen; i < p+pageHeaderLen+3*elemLen; i += 5 {
				raw[i] ^= 0xA5
			}
			return raw
		})},
		{name: "branch page child ids flipped", damage: edit(func(raw []byte, ps int, branches, _ []uint64) []byte {
			p := int(branches[0]) * ps
			raw[p+pageHeaderLen+elemLen+8+3] ^= 0xFF // the second child's page id, high byte
			return raw
		})},
		{name: "flipped bytes in a leaf element table", damage: edit(func(raw []byte, ps int, _, leaves []uint64) []byte {
			p := int(leaves[1]) * ps
			for i := p + pageHeaderLen; i < p+pageHeaderLen+4*elemLen; i += 3 {
				raw[i] ^= 0x5A
			}
			return raw
		})},
		{name: "flipped bytes in leaf data", writable: true, damage: edit(func(raw []byte, ps int, _, leaves []uint64) []byte {
			p := int(leaves[1]) * ps
			_, es, err := elements(leaves[1], raw[p:p+ps], nil)
			if err != nil || len(es) < 3 {
				panic(fmt.Sprint("leaf elements: ", err))
			}
			v := es[2].value // aliases raw
			v[len(v)/2] ^= 0x01
			return raw
		})},
		{name: "flipped bytes in the freelist", damage: edit(func(raw []byte, ps int, _, _ []uint64) []byte {
			pf, err := readLayout(bytes.NewReader(raw), int64(len(raw)))
			if err != nil || pf.cur.freelist == noFreelist {
				panic("no freelist page")
			}
			p := int(pf.cur.freelist) * ps
			for i := p + pageHeaderLen; i < p+pageHeaderLen+24; i++ {
				raw[i] = 0xFF // page ids far past the end
			}
			raw[p+10], raw[p+11] = 0xFF, 0xFF // count: "read it from the first id"
			return raw
		})},
		{name: "meta page 0 zeroed", damage: edit(func(raw []byte, ps int, _, _ []uint64) []byte {
			clear(raw[:ps])
			return raw
		})},
		{name: "meta page 1 zeroed", damage: edit(func(raw []byte, ps int, _, _ []uint64) []byte {
			clear(raw[ps : 2*ps])
			return raw
		})},
		{name: "both meta pages zeroed", damage: edit(func(raw []byte, ps int, _, _ []uint64) []byte {
			clear(raw[:2*ps])
			return raw
		})},
		{name: "zero length", damage: truncate(func(_, _ int) int { return 0 })},
	}
}

func TestOpenDamagedFile(t *testing.T) {
	for _, c := range damageCases() {
		t.Run(c.name, func(t *testing.T) {
			path := damageCopy(t, 600)
			c.damage(t, path)
			before := intact(t, path)
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}

			// Readers: a typed error or results, never a crash.
			if len(raw) > 0 {
				l, err := Open(path, Options{ReadOnly: true, LockTimeout: time.Second})
				if err != nil {
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("read-only Open = %v, want an error wrapping ErrCorrupt", err)
					}
				} else {
					for _, err := range l.Records(1) {
						if err != nil && !errors.Is(err, ErrCorrupt) {
							t.Errorf("Records: %v, want ErrCorrupt", err)
						}
					}
					if err := l.Verify(context.Background()); err == nil {
						t.Errorf("Verify of a damaged file found nothing")
					} else if !errors.Is(err, ErrCorrupt) {
						t.Errorf("Verify = %v, want ErrCorrupt", err)
					}
					_, _ = l.Stream("stream-3")
					if err := l.Close(); err != nil {
						t.Fatal(err)
					}
				}
				after, _ := os.ReadFile(path)
				if !bytes.Equal(raw, after) {
					t.Fatal("a read-only open changed the file")
				}
			}

			// A writer refuses a damaged structure without touching it.
			l, err := Open(path, Options{LockTimeout: time.Second})
			switch {
			case len(raw) == 0:
				// An empty file is a new log at this level; the store
				// above decides whether that is suspicious.
				if err != nil {
					t.Fatalf("Open(empty) = %v", err)
				}
				l.Close()
				return
			case c.writable:
				if err != nil {
					t.Fatalf("Open = %v; damage inside records cannot spread through a write", err)
				}
				if _, err := l.Append(context.Background(), Append{Stream: "after", Entries: []Entry{entry(1, "after the damage")}}); err != nil {
					t.Fatalf("Append: %v", err)
				}
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
			default:
				if err == nil {
					l.Close()
					t.Fatal("a writer opened a damaged file")
				}
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Open = %v, want an error wrapping ErrCorrupt", err)
				}
				var de *DamageError
				if !errors.As(err, &de) {
					t.Fatalf("Open = %v, want a *DamageError naming the damage", err)
				}
				after, _ := os.ReadFile(path)
				if !bytes.Equal(raw, after) {
					t.Fatal("a refused writer changed the file")
				}
			}
			now := intact(t, path)
			for seq := range before {
				if !now[seq] {
					t.Errorf("record %d passed its checksum before and is gone", seq)
				}
			}
		})
	}
}

// TestSalvageDamagedFile: with its branch pages damaged or both metas gone,
// every record whose leaf is intact is found, in order.
func TestSalvageDamagedFile(t *testing.T) {
	const n = 600
	for _, c := range damageCases() {
		if strings.HasPrefix(c.name, "truncated") || c.name == "zero length" || strings.Contains(c.name, "leaf") {
			continue // records are gone with their pages; covered above
		}
		t.Run(c.name, func(t *testing.T) {
			path := damageCopy(t, n)
			c.damage(t, path)
			s, err := Salvage(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Records) != n || len(s.Lost()) != 0 {
				t.Fatalf("salvaged %d records (lost %v), want all %d", len(s.Records), s.Lost(), n)
			}
			for i, r := range s.Records {
				if r.Seq != uint64(i+1) || !strings.HasPrefix(string(r.Payload), fmt.Sprintf("payload %04d ", i+1)) {
					t.Fatalf("record %d is %d %q", i+1, r.Seq, r.Payload)
				}
			}
			if len(s.Damage) == 0 {
				t.Error("Salvage reported no damage")
			}
		})
	}
}

// TestAppendAfterPanicIsBroken: a panic inside the writer's transaction
// (here from a projector, standing in for bbolt meeting a damaged page)
// ends the append with an error, not the process.
func TestAppendAfterPanicIsBroken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := openTest(t, path, Options{Projectors: []Projector{panicky{}}})
	_, err := l.Append(context.Background(), Append{Stream: "s", Entries: []Entry{entry(1, "boom")}})
	if !errors.Is(err, ErrBroken) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Append = %v, want ErrBroken wrapping ErrCorrupt", err)
	}
	if _, err := l.Append(context.Background(), Append{Stream: "s", Entries: []Entry{entry(1, "next")}}); !errors.Is(err, ErrBroken) {
		t.Fatalf("next Append = %v, want ErrBroken", err)
	}
}

type panicky struct{}

func (panicky) Name() string                        { return "panicky" }
func (panicky) Project(tx *Tx, recs []Record) error { panic("page 19 already freed") }

// TestReadOnlyWritesNothing: a read-only open works on a file in a
// read-only directory, beside another reader, and refuses appends.
func TestReadOnlyWritesNothing(t *testing.T) {
	path := damageLog(t, 40)
	raw, _ := os.ReadFile(path)
	fi, _ := os.Stat(path)
	a := openTest(t, path, Options{ReadOnly: true})
	b := openTest(t, path, Options{ReadOnly: true, LockTimeout: 100 * time.Millisecond}) // shared lock
	if got := len(collect(t, b, 1)); got != 40 {
		t.Fatalf("read %d records, want 40", got)
	}
	if _, err := a.Append(context.Background(), Append{Stream: "s", Entries: []Entry{entry(1, "x")}}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Append = %v, want ErrReadOnly", err)
	}
	if err := a.Verify(context.Background()); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if _, err := Open(path, Options{LockTimeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Fatalf("a writer beside readers: %v, want ErrLocked", err)
	}
	a.Close()
	b.Close()
	after, _ := os.ReadFile(path)
	fi2, _ := os.Stat(path)
	if !bytes.Equal(raw, after) || !fi.ModTime().Equal(fi2.ModTime()) {
		t.Fatal("read-only opens changed the file")
	}
}

// FuzzOpen opens mutations of a small valid log, for writing and for
// reading, and reads and verifies what opened: no input may crash, and a
// refusal wraps ErrCorrupt. `go test` runs the seeds; -fuzz mutates them.
func FuzzOpen(f *testing.F) {
	path := damageLog(f, 120)
	raw, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add(raw[:len(raw)/2])
	f.Add(raw[:4096+100])
	f.Add([]byte{})
	for _, off := range []int{0, 4096 + 20, 2*4096 + 20, 3*4096 + 30, 4*4096 + 64, len(raw) - 4096 + 40} {
		if off < len(raw) {
			b := bytes.Clone(raw)
			for i := off; i < off+16 && i < len(b); i++ {
				b[i] ^= 0xFF
			}
			f.Add(b)
		}
	}
	f.Fuzz(fuzzOpenBody)
}

func fuzzOpenBody(t *testing.T, data []byte) {
	{
		path := filepath.Join(t.TempDir(), "log.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, ro := range []bool{true, false} {
			if ro && len(data) == 0 {
				continue
			}
			l, err := Open(path, Options{ReadOnly: ro, LockTimeout: time.Second})
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Open(readOnly=%v) = %v, want ErrCorrupt", ro, err)
				}
				continue
			}
			for _, err := range l.Records(1) {
				if err != nil && !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Records: %v", err)
				}
			}
			_ = l.Verify(context.Background())
			_, _ = l.Stream("stream-1")
			if !ro {
				_, _ = l.Append(context.Background(), Append{Stream: "fuzz", Entries: []Entry{entry(1, "x")}})
			}
			if err := l.Close(); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Close: %v", err)
			}
		}
	}
}

// TestWriterRefusesIndexMismatch: a stream index that lost an entry (the
// file's structure is sound) is refused by a writer, which would extend
// the damage, and read by a reader; Verify names it.
func TestWriterRefusesIndexMismatch(t *testing.T) {
	path := damageCopy(t, 40)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketVersions).Cursor().First()
		return tx.Bucket(bucketVersions).Delete(k)
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(path, Options{})
	var de *DamageError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "40 records but its stream index 39 entries") {
		t.Fatalf("writer Open = %v, want the index mismatch", err)
	}
	l := openTest(t, path, Options{ReadOnly: true})
	if got := len(collect(t, l, 1)); got != 40 {
		t.Fatalf("read %d records, want 40", got)
	}
	if err := l.Verify(context.Background()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify = %v", err)
	}
}

// TestRestoreRenumbers: records after a gap move down; an append's
// records stay one append under its idempotency key, so a retry finds
// them; stream versions are recounted.
func TestRestoreRenumbers(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src.db")
	l := openTest(t, src, Options{})
	mustAppend(t, l, Append{Stream: "a", Entries: []Entry{entry(1, "a1")}})
	mustAppend(t, l, Append{Stream: "b", Entries: []Entry{entry(1, "b1")}})
	mustAppend(t, l, Append{Stream: "a", Key: "k", Entries: []Entry{entry(2, "a2"), entry(3, "a3")}})
	mustAppend(t, l, Append{Stream: "b", Entries: []Entry{entry(2, "b2")}})
	recs := collect(t, l, 1)
	l.Close()
	kept := append([]Record{recs[0]}, recs[2:]...) // record 2 is lost
	dst := filepath.Join(t.TempDir(), "dst.db")
	res, err := Restore(dst, kept)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res.Renumbered) != "map[3:2 4:3 5:4]" || res.KeysDropped != 0 {
		t.Fatalf("renumbered %v, keys dropped %d", res.Renumbered, res.KeysDropped)
	}
	if _, err := Restore(dst, kept); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Restore over an existing file: %v", err)
	}
	l = openTest(t, dst, Options{})
	got := collect(t, l, 1)
	for i, r := range got {
		if r.Seq != uint64(i+1) || string(r.Payload) != string(kept[i].Payload) || r.Key != kept[i].Key {
			t.Fatalf("record %d: %+v, want %+v", i+1, r, kept[i])
		}
	}
	dup := mustAppend(t, l, Append{Stream: "a", Key: "k", Entries: []Entry{entry(2, "again")}})
	if !dup.Duplicate || dup.First != 2 || dup.Last != 3 || dup.Version != 3 {
		t.Fatalf("retry under the kept key: %+v", dup)
	}
	if err := l.Verify(context.Background()); err != nil {
		t.Fatalf("Verify of the restored log: %v", err)
	}
	if b, _ := l.Stream("b"); len(b) != 1 {
		t.Fatalf("stream b holds %d records, want 1 (one was lost)", len(b))
	}
}
