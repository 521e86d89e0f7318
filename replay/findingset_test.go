package replay

import (
	"fmt"
	"testing"
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
