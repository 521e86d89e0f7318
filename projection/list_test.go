package projection

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/delegations/delegations/fsm"
)

// TestSummariesPages: Summaries is List without the growing texts, and
// pages of any size, by id or by time, with or without a filter, put
// together give the whole listing; a cursor that the filter no longer
// lists still says where the next page starts. Each holds whether a
// whole listing looks each summary up or walks them all (listWalkOver).
func TestSummariesPages(t *testing.T) {
	for _, walkOver := range []int{listWalkOver, 0} {
		t.Run(fmt.Sprintf("walkOver=%d", walkOver), func(t *testing.T) { testSummariesPages(t, walkOver) })
	}
}

func testSummariesPages(t *testing.T, walkOver int) {
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	var ids []string
	for i := range 7 {
		d := register(t, s)
		ids = append(ids, d.ID)
		if i%2 == 0 {
			if _, err := s.Complete(ctx, d.ID, "a long result", "title", "description"); err != nil {
				t.Fatal(err)
			}
		}
	}
	root := registration().RootSessionID
	for _, o := range []ListOptions{{}, {ByTime: true}, {Status: fsm.Complete}, {Status: fsm.Registered, ByTime: true}} {
		full, err := s.list(root, o, false, walkOver)
		if err != nil {
			t.Fatal(err)
		}
		sums, err := s.list(root, o, true, walkOver)
		if err != nil {
			t.Fatal(err)
		}
		if len(sums) != len(full) {
			t.Fatalf("%+v: %d summaries, %d records", o, len(sums), len(full))
		}
		for i := range full {
			want := full[i]
			want.Prompt, want.Progress, want.Result, want.Error = "", "", "", ""
			if sums[i] != want {
				t.Errorf("%+v: summary %d = %+v, want %+v", o, i, sums[i], want)
			}
		}
		for _, limit := range []int{1, 2, 3, 10} {
			var paged []fsm.Delegation
			p := o
			p.Limit = limit
			for {
				page, err := s.list(root, p, true, walkOver)
				if err != nil {
					t.Fatal(err)
				}
				paged = append(paged, page...)
				if len(page) < limit {
					break
				}
				p.After = page[len(page)-1].ID
			}
			if !slices.Equal(idsOf(paged), idsOf(full)) {
				t.Errorf("%+v, pages of %d: %v, want %v", o, limit, idsOf(paged), idsOf(full))
			}
		}
		// After a delegation the filter leaves out: the ones past it.
		for _, after := range ids {
			p := o
			p.After = after
			page, err := s.list(root, p, true, walkOver)
			if err != nil {
				t.Fatal(err)
			}
			all, _ := s.List(root, ListOptions{ByTime: o.ByTime})
			i := slices.IndexFunc(all, func(d fsm.Delegation) bool { return d.ID == after })
			var want []string
			for _, d := range all[i+1:] {
				if o.Status == "" || d.State == o.Status {
					want = append(want, d.ID)
				}
			}
			if g := idsOf(page); !slices.Equal(g, want) {
				t.Errorf("%+v after %s: %v, want %v", o, after, g, want)
			}
		}
	}
}

func idsOf(ds []fsm.Delegation) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

// TestListSummaryMissing: a roots view entry whose summary the summaries
// view lacks fails the listing with an error naming the delegation and
// the way out, whether the listing looks the summary up or walks them.
func TestListSummaryMissing(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	var ids []string
	for range 3 {
		ids = append(ids, register(t, s).ID)
	}
	root := registration().RootSessionID
	s.Close()
	db, err := bolt.Open(filepath.Join(dir, LogFile), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var lost string
	err = db.Update(func(tx *bolt.Tx) error {
		views := tx.Bucket([]byte("views"))
		v := views.Bucket([]byte(bucketRoots)).Get(pairKey(root, ids[1]))
		if len(v) != 8 {
			return fmt.Errorf("roots view entry of %s: %x", ids[1], v)
		}
		lost = ids[1]
		return views.Bucket([]byte(bucketSummaries)).Delete(append(pairKey(root, ""), v...))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	for _, walkOver := range []int{listWalkOver, 0} {
		_, err := s.list(root, ListOptions{}, true, walkOver)
		if err == nil || !strings.Contains(err.Error(), lost) || !strings.Contains(err.Error(), "replay --rebuild") {
			t.Errorf("walkOver=%d: listing with a summary missing: %v", walkOver, err)
		}
	}
}
