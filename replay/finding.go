package replay

import (
	"cmp"
	"container/heap"
	"slices"
	"strconv"
	"strings"

	"github.com/delegations/delegations/fsm"
)

// Severity ranks a finding. See the package documentation for what each
// level means and which ones make Report.Failed true.
type Severity string

// Severities, most severe first.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
	SeverityInfo    Severity = "info"
)

// Finding codes: stable, for machines. The package documentation lists
// what each means.
const (
	CodeNotPersisted           = "not_persisted"
	CodeArtifactMissing        = "artifact_missing"
	CodeArtifactChanged        = "artifact_changed"
	CodeArtifactUnreadable     = "artifact_unreadable"
	CodeArtifactNotReproduced  = "artifact_not_reproducible"
	CodeNotNotified            = "not_notified"
	CodeAllCompleteNotNotified = "all_complete_not_notified"
	CodeUnread                 = "unread"
	CodeOverdue                = "overdue"
	CodeLateResult             = "late_result"
	CodeLateEvents             = "late_events"
	CodeCorruptRecord          = "corrupt_record"
	CodeBadPayload             = "bad_payload"
	CodeUnknownKinds           = "unknown_kinds"
	CodeViewsBehind            = "views_behind"
	CodeViewMismatch           = "view_mismatch"
	CodeIndexCorrupt           = "index_corrupt"
)

// Codes returns every finding code, in the order of the package
// documentation's table.
func Codes() []string {
	return []string{
		CodeNotPersisted, CodeArtifactMissing, CodeArtifactChanged, CodeArtifactUnreadable,
		CodeArtifactNotReproduced, CodeNotNotified, CodeAllCompleteNotNotified, CodeUnread,
		CodeOverdue, CodeLateResult, CodeLateEvents, CodeCorruptRecord, CodeBadPayload,
		CodeUnknownKinds, CodeViewsBehind, CodeViewMismatch, CodeIndexCorrupt,
	}
}

// Finding is one thing replay found. Delegation is empty for findings
// about the log or the views as a whole, and Parent is set for a parent
// session's all-complete notification.
type Finding struct {
	Code       string    `json:"code"`
	Severity   Severity  `json:"severity"`
	Delegation string    `json:"delegationId,omitempty"`
	Parent     string    `json:"parentSessionID,omitempty"`
	Status     fsm.State `json:"status,omitempty"`       // the delegation's replayed status
	View       string    `json:"view,omitempty"`         // view_mismatch: which view
	Path       string    `json:"artifactPath,omitempty"` // artifact findings: the file, absolute
	Seqs       []uint64  `json:"seqs"`                   // the records involved, in order
	Diagnosis  string    `json:"diagnosis"`              // what happened, in plain language
	Missing    string    `json:"missing,omitempty"`      // the step that did not happen
	Next       string    `json:"next,omitempty"`         // what to run next

	group uint64 // sort key: the first sequence number of the delegation (0: the log as a whole)
	seq   uint64 // an artifact finding: the persisted event checked
}

// key identifies a finding across two reports (Rebuild's fixed list).
func (f *Finding) key() string {
	var b strings.Builder
	b.WriteString(f.Code)
	b.WriteByte(0)
	b.WriteString(f.Delegation)
	b.WriteByte(0)
	b.WriteString(f.Parent)
	b.WriteByte(0)
	b.WriteString(f.View)
	for _, s := range f.Seqs {
		b.WriteByte(0)
		b.WriteString(strconv.FormatUint(s, 10))
	}
	return b.String()
}

// compareFindings is the order of a report: the log as a whole first, then
// by delegation in the order they first appear in the log; within one, by
// their first sequence number, then by code.
func compareFindings(a, b *Finding) int {
	first := func(f *Finding) uint64 {
		if len(f.Seqs) == 0 {
			return 0
		}
		return f.Seqs[0]
	}
	// A parent's finding sorts after the delegation whose step made it due.
	parentOnly := func(f *Finding) int {
		if f.group > 0 && f.Delegation == "" {
			return 1
		}
		return 0
	}
	return cmp.Or(
		cmp.Compare(a.group, b.group),
		cmp.Compare(parentOnly(a), parentOnly(b)),
		strings.Compare(a.Delegation, b.Delegation),
		strings.Compare(a.Parent, b.Parent),
		cmp.Compare(first(a), first(b)),
		strings.Compare(a.Code, b.Code),
		strings.Compare(a.View, b.View),
	)
}

// listLimit is how many findings of one code a report lists. A damaged
// store can hold a finding per delegation (its artifact directory gone,
// every result unread): past the limit a report counts the findings of
// that code (Report.Unlisted) and keeps of each only what removing it
// needs, so that its memory, and the text and JSON it renders, stay
// bounded by the number of codes however many delegations the log holds.
// 100,000 missing artifacts took 507 MiB to verify when every finding was
// listed.
var listLimit = 1000

// findingSet is a report's findings as they are found: at most listLimit
// of each code kept whole, the first in the report's order
// (compareFindings), whatever order they come in; of the others what
// removal and the counts need.
type findingSet struct {
	codes map[string]*codeFindings
	added int
}

// codeFindings is one code's findings: listed is a heap whose top is the
// last in the report's order, the one to drop for an earlier one.
type codeFindings struct {
	listed   []listedFinding
	unlisted []unlistedFinding
}

// listedFinding is a finding a findingSet lists, with the order add saw
// it in: findings equal in the report's order keep it, as a stable sort
// of them all would.
type listedFinding struct {
	Finding
	order int
}

func compareListed(a, b *listedFinding) int {
	return cmp.Or(compareFindings(&a.Finding, &b.Finding), cmp.Compare(a.order, b.order))
}

// unlistedFinding is what a findingSet keeps of a finding past the limit.
type unlistedFinding struct {
	delegation string
	seq        uint64 // Finding.seq
	severity   Severity
}

func (c *codeFindings) Len() int           { return len(c.listed) }
func (c *codeFindings) Less(i, j int) bool { return compareListed(&c.listed[i], &c.listed[j]) > 0 }
func (c *codeFindings) Swap(i, j int)      { c.listed[i], c.listed[j] = c.listed[j], c.listed[i] }
func (c *codeFindings) Push(x any)         { c.listed = append(c.listed, x.(listedFinding)) }
func (c *codeFindings) Pop() any {
	last := c.listed[len(c.listed)-1]
	c.listed = c.listed[:len(c.listed)-1]
	return last
}

// add adds f, its zero sequence numbers dropped.
func (s *findingSet) add(f Finding) {
	seqs := []uint64{}
	for _, q := range f.Seqs {
		if q != 0 {
			seqs = append(seqs, q)
		}
	}
	f.Seqs = seqs
	if s.codes == nil {
		s.codes = map[string]*codeFindings{}
	}
	c := s.codes[f.Code]
	if c == nil {
		c = &codeFindings{}
		s.codes[f.Code] = c
	}
	heap.Push(c, listedFinding{f, s.added})
	s.added++
	if len(c.listed) > listLimit {
		last := heap.Pop(c).(listedFinding)
		c.unlisted = append(c.unlisted, unlistedFinding{delegation: last.Delegation, seq: last.seq, severity: last.Severity})
	}
}

// remove drops the findings of delegation at check seq for which drop
// says so. An unlisted one that would now be listed stays unlisted: a
// report may list fewer than listLimit of a code whose findings were
// dropped, never more, and its counts are exact.
func (s *findingSet) remove(drop func(delegation string, seq uint64) bool) {
	s.removeListed(drop)
	for _, c := range s.codes {
		c.unlisted = slices.DeleteFunc(c.unlisted, func(u unlistedFinding) bool { return drop(u.delegation, u.seq) })
	}
}

// removeListed is remove of the listed findings alone: a few thousand at
// most, where the unlisted ones may be one per delegation.
func (s *findingSet) removeListed(drop func(delegation string, seq uint64) bool) {
	for _, c := range s.codes {
		c.listed = slices.DeleteFunc(c.listed, func(f listedFinding) bool { return drop(f.Delegation, f.seq) })
		heap.Init(c)
	}
}

// fill sets r's findings, in the report's order, its counts by severity
// and of the findings it does not list.
func (s *findingSet) fill(r *Report) {
	var listed []listedFinding
	r.Errors, r.Warnings, r.Infos, r.Unlisted = 0, 0, 0, nil
	count := func(sev Severity) {
		switch sev {
		case SeverityError:
			r.Errors++
		case SeverityWarning:
			r.Warnings++
		default:
			r.Infos++
		}
	}
	for code, c := range s.codes {
		for i := range c.listed {
			count(c.listed[i].Severity)
		}
		listed = append(listed, c.listed...)
		for _, u := range c.unlisted {
			count(u.severity)
		}
		if len(c.unlisted) > 0 {
			if r.Unlisted == nil {
				r.Unlisted = map[string]int{}
			}
			r.Unlisted[code] = len(c.unlisted)
		}
	}
	slices.SortFunc(listed, func(a, b listedFinding) int { return compareListed(&a, &b) })
	r.Findings = make([]Finding, len(listed))
	for i := range listed {
		r.Findings[i] = listed[i].Finding
	}
}

// seqList returns at most maxSeqs of seqs: reports list the first ones and
// say how many there were.
func seqList(seqs []uint64) []uint64 {
	if len(seqs) > maxSeqs {
		seqs = seqs[:maxSeqs]
	}
	return append([]uint64{}, seqs...)
}

// maxSeqs bounds the sequence numbers one finding lists.
const maxSeqs = 20
