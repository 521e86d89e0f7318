package replay

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/projection/artifact"
)

// lifecycle names, for every delegation, the first step that did not
// happen, plus late events and waiting all-complete notifications: it
// gives them to found, one by one.
func lifecycle(dir string, st *state, now time.Time, o *Options, found func(Finding)) {
	for _, id := range st.kept() {
		d := st.ds[id]
		if d.damaged {
			continue // the corrupt_record finding says what is known
		}
		r := &d.rec
		add := func(f Finding) {
			f.Delegation, f.Status, f.group = id, r.State, d.first
			found(f)
		}
		switch {
		case r.State.Active():
			if r.TimeoutAt.IsZero() || !now.After(r.TimeoutAt) {
				break
			}
			late := now.Sub(r.TimeoutAt)
			f := Finding{Code: CodeOverdue, Severity: SeverityInfo, Seqs: []uint64{d.first, d.last}, Missing: "timed_out",
				Diagnosis: fmt.Sprintf("%s is %s, and its deadline passed at %s (%s ago; registered at %s, record %d), but no timed_out event follows.",
					id, r.State, fmtT(r.TimeoutAt), fmtDur(late), fmtT(r.CreatedAt), d.first),
				Next: "start delegations serve (it times out overdue delegations when it starts), or end it with delegations cancel " + id,
			}
			if late < o.DeadlineGrace {
				f.Diagnosis += " The deadline sweeper times it out shortly."
			} else {
				f.Severity = SeverityError
				f.Diagnosis += " Nothing enforced the deadline: no daemon was running, or its sweeper is stuck; its parent is still waiting."
			}
			add(f)
		case r.State.Terminal() && r.PersistedAt.IsZero():
			f := Finding{Code: CodeNotPersisted, Severity: SeverityError, Seqs: []uint64{d.terminal}, Missing: "persisted",
				Diagnosis: fmt.Sprintf("%s ended %s at %s (record %d), but no persisted event follows: its artifact was never written, so its parent was never notified and delegation_read cannot return the result file (readers get the terminal text instead).",
					id, r.State, fmtT(r.CompletedAt), d.terminal),
				Next: "open the store to retry the write (any delegations command does, e.g. delegations replay --rebuild)",
			}
			if rel, err := artifact.RelPath(r.ProjectID, r.RootSessionID, id); err == nil {
				f.Path = filepath.Join(dir, rel)
				f.Next += "; if it fails again, check that " + filepath.Dir(f.Path) + " is writable"
			}
			add(f)
		case r.State.Terminal() && d.imported:
			// Adopted from the plugin, which delivered it: nothing is due.
		case r.State.Terminal() && r.NotifiedAt.IsZero():
			age := since(now, r.PersistedAt)
			nid := projection.TerminalNotificationID(id)
			f := Finding{Code: CodeNotNotified, Severity: SeverityInfo, Missing: "notified",
				Seqs: []uint64{d.persisted},
				Diagnosis: fmt.Sprintf("%s ended %s at %s and its artifact was written at %s (record %d), but the bridge has not acknowledged its terminal notification %s for %s",
					id, r.State, fmtT(r.CompletedAt), fmtT(r.PersistedAt), d.persisted, nid, fmtDur(age)),
				Next: "delegations notifications --parent-session " + r.ParentSessionID + " shows it; the bridge acknowledges it with delegations ack " + nid + " (is the plugin bridge running?)",
			}
			if t := d.trouble; t != nil && t.nfailures > 0 {
				f.Seqs = append(f.Seqs, t.failures...)
				f.Diagnosis += fmt.Sprintf("; delivery failed %s, last with %s", times(t.nfailures), strconv.Quote(cut(t.lastError, 120)))
			}
			if age < o.Stale {
				f.Diagnosis += ". It waits in the outbox and is delivered again until acknowledged."
			} else {
				f.Severity = SeverityError
				f.Diagnosis += ". The parent session was never told that the result is ready."
			}
			f.Seqs = seqList(f.Seqs)
			add(f)
		case r.Unread():
			age := since(now, r.NotifiedAt)
			add(Finding{Code: CodeUnread, Severity: SeverityInfo, Missing: "read",
				Seqs: []uint64{d.terminal, d.persisted, d.notified},
				Diagnosis: fmt.Sprintf("%s ended %s at %s and its parent was notified at %s (record %d), but the result has not been read since (%s): it is the unread result compaction carries.",
					id, r.State, fmtT(r.CompletedAt), fmtT(r.NotifiedAt), d.notified, fmtDur(age)),
				Next: "delegations read --root-session " + r.RootSessionID + " " + id,
			})
		}
		for _, f := range late(id, d) {
			found(f)
		}
	}
	for _, n := range st.allComplete() {
		if now.Before(n.DueAt) {
			continue
		}
		age := since(now, n.DueAt)
		f := Finding{Code: CodeAllCompleteNotNotified, Severity: SeverityInfo, Parent: n.Parent, Seqs: []uint64{n.Seq}, Missing: "all_complete_notified",
			Diagnosis: fmt.Sprintf("every delegation of cycle %d of parent session %s was notified (the last at record %d), and the all-complete notification is due since %s, but the bridge has not acknowledged it for %s",
				n.Cycle, n.Parent, n.Seq, fmtT(n.DueAt), fmtDur(age)),
			Next:  "delegations notifications --parent-session " + n.Parent + " shows it; the bridge acknowledges it with delegations ack " + n.ID,
			group: n.group,
		}
		if n.Failures > 0 {
			f.Diagnosis += fmt.Sprintf("; delivery failed %s, last with %s", times(n.Failures), strconv.Quote(cut(n.LastError, 120)))
		}
		if age < o.Stale {
			f.Diagnosis += ". It waits in the outbox."
		} else {
			f.Severity = SeverityError
			f.Diagnosis += ". The parent session was never woken up."
		}
		found(f)
	}
}

// allComplete returns the all-complete notifications waiting at the end
// of the replay, by parent session.
func (st *state) allComplete() []*dueAllComplete {
	var out []*dueAllComplete
	for _, p := range st.parents {
		if p.waiting {
			p.due.ID = projection.AllCompleteNotificationID(p.due.Parent, p.due.Cycle)
			out = append(out, &p.due)
		}
	}
	slices.SortFunc(out, func(a, b *dueAllComplete) int { return strings.Compare(a.Parent, b.Parent) })
	return out
}

// late reports commands refused after the terminal state: a refused
// completion is a result that was never delivered.
func late(id string, d *delegation) []Finding {
	if d.trouble == nil || len(d.rejections) == 0 {
		return nil
	}
	r := &d.rec
	var out []Finding
	var lost []rejection
	counts := map[fsm.Kind]int{}
	var kinds []fsm.Kind
	var seqs []uint64
	for _, rj := range d.rejections {
		if rj.kind == fsm.KindCompleted && rj.state != fsm.Complete {
			lost = append(lost, rj)
			continue
		}
		if counts[rj.kind] == 0 {
			kinds = append(kinds, rj.kind)
		}
		counts[rj.kind]++
		seqs = append(seqs, rj.seq)
	}
	base := func(f Finding) Finding {
		f.Delegation, f.Status, f.group = id, r.State, d.first
		f.Next = "delegations timeline " + id + " shows every step with its time"
		return f
	}
	ended := fmt.Sprintf("%s ended %s at %s (record %d)", id, r.State, fmtT(r.CompletedAt), d.terminal)
	if d.terminal == 0 {
		ended = fmt.Sprintf("%s was %s", id, r.State)
	}
	for _, rj := range lost {
		f := base(Finding{Code: CodeLateResult, Severity: SeverityWarning, Seqs: []uint64{d.terminal, rj.seq}, Missing: "delivery of the late result",
			Diagnosis: fmt.Sprintf("%s, then its result arrived at %s (record %d, %s later) and was refused: the delegation had already ended, so that result was never written to the artifact or delivered. The log keeps its text: %s.",
				ended, fmtT(rj.at), rj.seq, fmtDur(since(rj.at, r.CompletedAt)), strconv.Quote(cut(firstLine(rj.result), 80))),
		})
		if r.State == fsm.Timeout {
			f.Next += "; if the child often needs longer, register with a longer --timeout"
		}
		if d.terminal == 0 {
			f.Seqs = []uint64{rj.seq}
		}
		out = append(out, f)
	}
	if len(seqs) > 0 {
		var parts []string
		for _, k := range kinds {
			parts = append(parts, fmt.Sprintf("%s ×%d", k, counts[k]))
		}
		n := r.Rejected - len(lost)
		f := base(Finding{Code: CodeLateEvents, Severity: SeverityInfo,
			Seqs: seqList(append([]uint64{d.terminal}, seqs...)),
			Diagnosis: fmt.Sprintf("%s; afterwards %s refused and recorded (%s). They changed nothing: the child or the plugin kept reporting after the end.",
				ended, lateCommands(n), strings.Join(parts, ", ")),
		})
		if d.terminal == 0 {
			f.Seqs = seqList(seqs)
		}
		out = append(out, f)
	}
	return out
}

// since returns t - from, never negative.
func since(t, from time.Time) time.Duration {
	if t.Before(from) {
		return 0
	}
	return t.Sub(from)
}

// fmtDur shows a duration to the second (to the minute past an hour).
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func quote(s string) string { return strconv.Quote(s) }

// cut returns s cut to n runes, with "..." when cut.
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for j := range s {
		if i == n-3 {
			return s[:j] + "..."
		}
		i++
	}
	return s
}

func firstLine(s string) string {
	s = strings.TrimLeft(s, " \t\r\n")
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

func times(n int) string {
	if n == 1 {
		return "once"
	}
	return strconv.Itoa(n) + " times"
}

func lateCommands(n int) string {
	if n == 1 {
		return "1 late command was"
	}
	return strconv.Itoa(n) + " late commands were"
}
