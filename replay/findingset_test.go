package replay

import (
	"context"
	"fmt"
	"testing"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection/artifact"
)

// TestFindingSetRemove: findings come in any order; the set lists the
// first by the report's order, and removing one, listed or not, keeps the
// counts exact (the one that would move up stays unlisted).
func TestFindingSetRemove(t *testing.T) {
	defer func(old int) { listLimit = old }(listLimit)
	listLimit = 2
	var s findingSet
	for _, g := range []uint64{5, 1, 4, 2, 3} {
		sev := SeverityError
		if g == 4 {
			sev = SeverityWarning
		}
		s.add(Finding{Code: CodeArtifactMissing, Severity: sev, Delegation: fmt.Sprint("d", g), Seqs: []uint64{g, 0}, group: g, seq: g})
	}
	s.add(Finding{Code: CodeUnread, Severity: SeverityInfo, Delegation: "d9", group: 9})
	var r Report
	s.fill(&r)
	if len(r.Findings) != 3 || r.Findings[0].Delegation != "d1" || r.Findings[1].Delegation != "d2" || r.Findings[2].Code != CodeUnread {
		t.Fatalf("listed %+v, want d1, d2 (the first two artifact findings) and the unread one", r.Findings)
	}
	if len(r.Findings[0].Seqs) != 1 {
		t.Errorf("seqs %v: the zero is dropped", r.Findings[0].Seqs)
	}
	if r.Unlisted[CodeArtifactMissing] != 3 || len(r.Unlisted) != 1 || r.Errors != 4 || r.Warnings != 1 || r.Infos != 1 {
		t.Fatalf("unlisted %v, counts %d/%d/%d, want 3 unlisted and 4/1/1", r.Unlisted, r.Errors, r.Warnings, r.Infos)
	}

	s.remove(func(id string, seq uint64) bool { return id == "d1" || seq == 4 })
	s.fill(&r)
	if len(r.Findings) != 2 || r.Findings[0].Delegation != "d2" || r.Unlisted[CodeArtifactMissing] != 2 || r.Errors != 3 || r.Warnings != 0 {
		t.Errorf("after removing d1 (listed) and d4 (not): %+v, unlisted %v, counts %d/%d", r.Findings, r.Unlisted, r.Errors, r.Warnings)
	}
}

// TestFindingSetAfterRemove: findings added after a removal still leave
// the first of the code listed (the removal keeps the heap a heap).
func TestFindingSetAfterRemove(t *testing.T) {
	defer func(old int) { listLimit = old }(listLimit)
	listLimit = 3
	var s findingSet
	add := func(gs ...uint64) {
		for _, g := range gs {
			s.add(Finding{Code: CodeUnread, Severity: SeverityInfo, Delegation: fmt.Sprint("d", g), group: g, seq: g})
		}
	}
	add(10, 20, 30)
	s.removeListed(func(_ string, seq uint64) bool { return seq == 30 })
	add(0, 15)
	var r Report
	s.fill(&r)
	var got []string
	for _, f := range r.Findings {
		got = append(got, f.Delegation)
	}
	if fmt.Sprint(got) != "[d0 d10 d15]" || r.Unlisted[CodeUnread] != 1 {
		t.Errorf("listed %v, %d unlisted; want [d0 d10 d15] and 1 (d20)", got, r.Unlisted[CodeUnread])
	}
}

// TestFindingSetTies: findings equal in the report's order are listed in
// the order they were added, as a stable sort would, and the first of
// them are the ones listed.
func TestFindingSetTies(t *testing.T) {
	defer func(old int) { listLimit = old }(listLimit)
	listLimit = 100
	var s findingSet
	for i := range 300 {
		s.add(Finding{Code: CodeViewMismatch, Severity: SeverityError, View: "records", Diagnosis: fmt.Sprint(i)})
	}
	var r Report
	s.fill(&r)
	if len(r.Findings) != 100 {
		t.Fatalf("%d listed", len(r.Findings))
	}
	for i, f := range r.Findings {
		if f.Diagnosis != fmt.Sprint(i) {
			t.Fatalf("finding %d is %q: ties out of the order they came in", i, f.Diagnosis)
		}
	}
}

// TestSupersededCheckKeepsNoSlot: a delegation's artifact checked again
// (persisted again, or taken over) counts with its last check only, and
// the earlier check's finding takes no place in the list.
func TestSupersededCheckKeepsNoSlot(t *testing.T) {
	defer func(old int) { listLimit = old }(listLimit)
	listLimit = 2
	dir := t.TempDir()
	rec := func(id string) *fsm.Delegation {
		rel, err := artifact.RelPath("proj", "ses_root", id)
		if err != nil {
			t.Fatal(err)
		}
		return &fsm.Delegation{ID: id, Registration: fsm.Registration{ProjectID: "proj", RootSessionID: "ses_root"}, State: fsm.Complete, ArtifactPath: rel, ArtifactSize: 10, ArtifactHash: 1}
	}
	// Two delegations, two places: the first's earlier check, done before
	// its second is queued or (as a worker may) after it, must not take
	// the second delegation's place.
	for _, earlierLast := range []bool{false, true} {
		a := newArtifacts(context.Background(), dir, "", false)
		d1, d2 := &delegation{first: 1, persisted: 10}, &delegation{first: 2, persisted: 20}
		if earlierLast {
			a.again(d1, rec("exotic-crimson-mussel"), 50, 10, 1)
			a.check(d2, rec("plain-white-yak"))
			a.check(d1, rec("exotic-crimson-mussel"))
		} else {
			a.check(d1, rec("exotic-crimson-mussel"))
			a.check(d2, rec("plain-white-yak"))
			a.again(d1, rec("exotic-crimson-mussel"), 50, 10, 1)
		}
		if err := a.wait(); err != nil {
			t.Fatal(err)
		}
		var r Report
		a.found.fill(&r)
		if len(r.Findings) != 2 || r.Findings[0].seq != 50 || r.Findings[1].Delegation != "plain-white-yak" || len(r.Unlisted) != 0 || r.Errors != 2 || a.checked != 2 {
			t.Errorf("earlier check last %v: findings %+v, unlisted %v, %d errors, %d checked; want the first's check at 50 and the second's", earlierLast, r.Findings, r.Unlisted, r.Errors, a.checked)
		}
	}
}
