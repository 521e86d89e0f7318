package replay

import (
	"cmp"
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

// sortFindings orders findings as reports show them: the log as a whole
// first, then by delegation in the order they first appear in the log;
// within one, by their first sequence number, then by code.
func sortFindings(fs []Finding) {
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
	slices.SortStableFunc(fs, func(a, b Finding) int {
		return cmp.Or(
			cmp.Compare(a.group, b.group),
			cmp.Compare(parentOnly(&a), parentOnly(&b)),
			strings.Compare(a.Delegation, b.Delegation),
			strings.Compare(a.Parent, b.Parent),
			cmp.Compare(first(&a), first(&b)),
			strings.Compare(a.Code, b.Code),
			strings.Compare(a.View, b.View),
		)
	})
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
