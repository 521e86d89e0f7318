package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// maxViewFindings bounds the findings one view produces; past it, one more
// finding says how many were left out.
const maxViewFindings = 20

const viewNext = "delegations replay --rebuild regenerates every view from the log"

// viewRule says which delegations a per-delegation view should list and
// whether an entry is the right one.
type viewRule struct {
	// want reports whether d should have an entry, and why, in words.
	want func(d *delegation) (bool, string)
	// check returns "" when e is the right entry for d, else what differs.
	check func(d *delegation, e *projection.ViewEntry) string
	// seq is the step that put d in the view.
	seq func(d *delegation) uint64
	// effect says what goes wrong while the view is wrong.
	effect string
}

func fmtT(t time.Time) string {
	if t.IsZero() {
		return "(none)"
	}
	return fsm.FormatTime(t)
}

func sessionTime(session string, got time.Time, wantSession string, want time.Time) string {
	if session == wantSession && got.Equal(want) {
		return ""
	}
	return fmt.Sprintf("the view has %s at %s, the log says %s at %s", quote(session), fmtT(got), quote(wantSession), fmtT(want))
}

var viewRules = map[string]viewRule{
	projection.ViewRoots: {
		want: func(d *delegation) (bool, string) {
			return d.indexed, "it is registered under root " + quote(d.rec.RootSessionID)
		},
		check: func(d *delegation, e *projection.ViewEntry) string {
			if e.Session != d.rec.RootSessionID {
				return "the view files it under root " + quote(e.Session) + ", the log says " + quote(d.rec.RootSessionID)
			}
			sum := d.rec.Summary()
			if want := sum.AppendRecord(nil); !bytes.Equal(e.Record, want) {
				return "its summary is not what its events replay to: " + recordDiff(e.Record, &sum)
			}
			return ""
		},
		seq:    func(d *delegation) uint64 { return d.first },
		effect: "delegation_list and delegation_read of its root session do not see it, or list shows it wrong",
	},
	projection.ViewParents: {
		want: func(d *delegation) (bool, string) {
			return d.indexed && (!d.imported || d.rec.ParentSessionID != ""), "it was delegated by parent " + quote(d.rec.ParentSessionID)
		},
		check: func(d *delegation, e *projection.ViewEntry) string {
			if e.Session == d.rec.ParentSessionID {
				return ""
			}
			return "the view files it under parent " + quote(e.Session) + ", the log says " + quote(d.rec.ParentSessionID)
		},
		seq:    func(d *delegation) uint64 { return d.first },
		effect: "its parent session's index is wrong",
	},
	projection.ViewRunning: {
		want: func(d *delegation) (bool, string) {
			return d.indexed && !d.imported && d.rec.State.Active(), "it is " + string(d.rec.State)
		},
		check: func(d *delegation, e *projection.ViewEntry) string {
			return sessionTime(e.Session, e.Time, d.rec.RootSessionID, d.rec.CreatedAt)
		},
		seq:    func(d *delegation) uint64 { return d.first },
		effect: "compaction carries the wrong running delegations",
	},
	projection.ViewDeadlines: {
		want: func(d *delegation) (bool, string) {
			return d.indexed && !d.imported && d.rec.State.Active(), "it is " + string(d.rec.State) + " with a deadline at " + fmtT(d.rec.TimeoutAt)
		},
		check: func(d *delegation, e *projection.ViewEntry) string {
			if e.Time.Equal(d.rec.TimeoutAt) {
				return ""
			}
			return "the view has its deadline at " + fmtT(e.Time) + ", the log says " + fmtT(d.rec.TimeoutAt)
		},
		seq:    func(d *delegation) uint64 { return d.first },
		effect: "the deadline sweeper times out the wrong delegations",
	},
	projection.ViewUnread: {
		want: func(d *delegation) (bool, string) {
			return d.rec.Unread() && !projection.Unregistered(&d.rec), "it was notified and not read since it completed"
		},
		check: func(d *delegation, e *projection.ViewEntry) string {
			return sessionTime(e.Session, e.Time, d.rec.RootSessionID, d.rec.CompletedAt)
		},
		seq: func(d *delegation) uint64 {
			if d.notified != 0 {
				return d.notified
			}
			return d.first
		},
		effect: "compaction carries the wrong unread results",
	},
	projection.ViewPending: {
		want: func(d *delegation) (bool, string) {
			return d.pending, "it is terminal and its artifact was never persisted"
		},
		check: func(*delegation, *projection.ViewEntry) string { return "" },
		seq: func(d *delegation) uint64 {
			if d.terminal != 0 {
				return d.terminal
			}
			return d.first
		},
		effect: "the store's start-up does not (or needlessly does) write its artifact",
	},
	projection.ViewMembers: {
		want: func(d *delegation) (bool, string) {
			return d.joined, fmt.Sprintf("it joined cycle %d of its parent", d.cycle)
		},
		check: func(d *delegation, e *projection.ViewEntry) string {
			if e.Member == d.cycle {
				return ""
			}
			return fmt.Sprintf("the view has it in cycle %d, the log says %d", e.Member, d.cycle)
		},
		seq:    func(d *delegation) uint64 { return d.first },
		effect: "its parent's all-complete notification comes at the wrong time",
	},
}

// viewCheck accumulates one comparison's findings.
type viewCheck struct {
	st       *state
	findings []Finding
	count    map[string]int // findings per view
	extra    map[string]int // findings per view past maxViewFindings
}

func (c *viewCheck) add(view string, f Finding) {
	if c.count[view] >= maxViewFindings {
		c.extra[view]++
		return
	}
	c.count[view]++
	f.Code, f.Severity, f.View = CodeViewMismatch, SeverityError, view
	if f.Next == "" {
		f.Next = viewNext
	}
	if f.Seqs == nil {
		f.Seqs = []uint64{}
	}
	f.group = c.st.group(f.Delegation)
	if d := c.st.ds[f.Delegation]; d != nil {
		f.Status = d.rec.State
	}
	c.findings = append(c.findings, f)
}

// compareViews compares every view in tx with what the replayed state says
// it should hold. compared is false when the views are not at the log's
// last record: then the one finding says so.
func compareViews(tx *eventlog.Tx, st *state) (fs []Finding, compared bool, err error) {
	c := &viewCheck{st: st, count: map[string]int{}, extra: map[string]int{}}
	checkpoint, last := projection.ViewsCheckpoint(tx), tx.Last()
	if checkpoint != last {
		var seqs []uint64
		for s := checkpoint + 1; s <= last && len(seqs) < maxSeqs; s++ {
			seqs = append(seqs, s)
		}
		f := Finding{
			Code: CodeViewsBehind, Severity: SeverityWarning, Seqs: seqs,
			Diagnosis: fmt.Sprintf("the views reflect the log up to record %d, but it holds %d records: list, read, compaction and notifications do not see the newest events yet (records were appended without the store's projection, or its catch-up was interrupted). The views were not compared.", checkpoint, last),
			Missing:   "projection of records " + itoa(checkpoint+1) + " to " + itoa(last),
			Next:      "open the store (any delegations command does) to let the views catch up, or delegations replay --rebuild",
		}
		if checkpoint > last {
			f.Severity = SeverityError
			f.Diagnosis = fmt.Sprintf("the views claim to reflect record %d, past the last record %d: they were written for another log file. The views were not compared.", checkpoint, last)
			f.Missing = ""
			f.Next = viewNext
			f.Seqs = nil
		}
		return []Finding{f}, false, nil
	}

	index := make(map[string]int, len(st.order))
	for i, id := range st.order {
		index[id] = i
	}
	seen := map[string][]bool{}
	for view := range viewRules {
		seen[view] = make([]bool, len(st.order))
	}
	seenRecords := make([]bool, len(st.order))
	seenCycles := map[string]bool{}
	seenOutbox := map[string]bool{}
	seenDue := map[string]bool{}
	seenTexts := map[string]bool{}

	err = projection.InspectViews(tx, func(e projection.ViewEntry) error {
		if e.Err != nil {
			c.add(e.View, Finding{Delegation: e.ID, Diagnosis: "a malformed entry: " + e.Err.Error() + "."})
			return nil
		}
		switch e.View {
		case projection.ViewRecords:
			i, ok := index[e.ID]
			if !ok {
				c.add(e.View, Finding{Delegation: e.ID, Diagnosis: "the records view holds " + quote(e.ID) + ", which has no events in the log: show, list and read report a delegation that never existed."})
				return nil
			}
			seenRecords[i] = true
			d := st.ds[e.ID]
			sum := d.rec.Summary() // the texts are in the texts view
			want := sum.AppendRecord(nil)
			if bytes.Equal(want, e.Record) {
				return nil
			}
			c.add(e.View, Finding{
				Delegation: e.ID, Seqs: []uint64{d.first, st.lastOf(e.ID)},
				Diagnosis: "the stored record of " + e.ID + " is not what its events replay to: " + recordDiff(e.Record, &sum) +
					". Every reader (show, list, read, compaction) sees the stored one.",
			})
		case projection.ViewTexts:
			d := st.ds[e.ID]
			if d == nil {
				c.add(e.View, Finding{Delegation: e.ID, Diagnosis: "the texts view holds a text of " + quote(e.ID) + ", which has no events in the log."})
				return nil
			}
			seenTexts[e.ID+"\x00"+itoa(uint64(e.Text))] = true
			if want := *d.rec.Texts()[e.Text]; string(e.Value) != want {
				c.add(e.View, Finding{Delegation: e.ID, Seqs: []uint64{d.first, st.lastOf(e.ID)},
					Diagnosis: fmt.Sprintf("text %d of %s in the texts view is %s, the log says %s: show and read return the stored one.", e.Text, e.ID, short(string(e.Value)), short(want))})
			}
		case projection.ViewCycles:
			seenCycles[e.Session] = true
			cs := st.cycles[e.Session]
			if cs == nil || !cs.written {
				c.add(e.View, Finding{Parent: e.Session, Diagnosis: "the cycles view holds a cycle for parent " + quote(e.Session) + ", which has no registered delegations in the log."})
				return nil
			}
			if *e.Cycle != cs.CycleView {
				c.add(e.View, Finding{Parent: e.Session, Diagnosis: fmt.Sprintf("the cycle of parent %s is %s in the view, the log says %s: its all-complete notification comes at the wrong time, or never.",
					quote(e.Session), cycleText(*e.Cycle), cycleText(cs.CycleView))})
			}
		case projection.ViewDue:
			seenDue[e.Session+"\x00"+e.ID] = true
			if n := st.outbox[e.ID]; n == nil || n.Parent != e.Session {
				c.add(e.View, Finding{Parent: e.Session,
					Diagnosis: "the due view files notification " + e.ID + " under parent " + quote(e.Session) + ", which the log says is not owed it now: notifications of that parent report an entry the outbox lacks."})
			}
		case projection.ViewOutbox:
			nid := string(e.Key)
			seenOutbox[nid] = true
			want := st.outbox[nid]
			if want == nil {
				c.add(e.View, Finding{Delegation: e.ID, Parent: e.Notification.Parent, Seqs: []uint64{e.Notification.Seq},
					Diagnosis: "the outbox holds notification " + nid + ", which the log says is not due: the bridge delivers it although it was acknowledged, or was never due."})
				return nil
			}
			if d := outboxDiff(e.Notification, want); d != "" {
				c.add(e.View, Finding{Delegation: e.ID, Parent: want.Parent, Seqs: []uint64{want.Seq},
					Diagnosis: "notification " + nid + " in the outbox is not what the log says: " + d + "."})
			}
		default:
			rule, ok := viewRules[e.View]
			if !ok {
				return nil
			}
			i, known := index[e.ID]
			if !known {
				c.add(e.View, Finding{Delegation: e.ID, Diagnosis: "the " + e.View + " view lists " + quote(e.ID) + ", which has no events in the log: " + rule.effect + "."})
				return nil
			}
			d := st.ds[e.ID]
			wanted, _ := rule.want(d)
			if !wanted || seen[e.View][i] {
				reason := "the log says it should not be there: it is " + string(d.rec.State)
				if seen[e.View][i] {
					reason = "it is listed twice"
				}
				c.add(e.View, Finding{Delegation: e.ID, Seqs: []uint64{rule.seq(d)},
					Diagnosis: "the " + e.View + " view lists " + e.ID + ", but " + reason + ": " + rule.effect + "."})
				return nil
			}
			seen[e.View][i] = true
			if diff := rule.check(d, &e); diff != "" {
				c.add(e.View, Finding{Delegation: e.ID, Seqs: []uint64{rule.seq(d)},
					Diagnosis: "the " + e.View + " view's entry for " + e.ID + " is wrong: " + diff + "; " + rule.effect + "."})
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}

	// What the views should hold and do not.
	for i, id := range st.order {
		d := st.ds[id]
		if !seenRecords[i] {
			c.add(projection.ViewRecords, Finding{Delegation: id, Seqs: []uint64{d.first, st.lastOf(id)},
				Diagnosis: "the log holds events of " + id + " but the records view has no record of it: show, list and read do not know it."})
		}
		for n, t := range d.rec.Texts() {
			if *t != "" && !seenTexts[id+"\x00"+itoa(uint64(n))] {
				c.add(projection.ViewTexts, Finding{Delegation: id, Seqs: []uint64{d.first, st.lastOf(id)},
					Diagnosis: fmt.Sprintf("the texts view lacks text %d of %s: show and read return it empty.", n, id)})
			}
		}
	}
	views := make([]string, 0, len(viewRules))
	for v := range viewRules {
		views = append(views, v)
	}
	slices.Sort(views)
	for _, view := range views {
		rule := viewRules[view]
		for i, id := range st.order {
			d := st.ds[id]
			if ok, why := rule.want(d); ok && !seen[view][i] {
				c.add(view, Finding{Delegation: id, Seqs: []uint64{rule.seq(d)},
					Diagnosis: "the " + view + " view does not list " + id + ", but " + why + ": " + rule.effect + "."})
			}
		}
	}
	for _, parent := range sortedKeys(st.cycles) {
		if cs := st.cycles[parent]; cs.written && !seenCycles[parent] {
			c.add(projection.ViewCycles, Finding{Parent: parent,
				Diagnosis: "the cycles view has no cycle for parent " + quote(parent) + ", the log says " + cycleText(cs.CycleView) + ": its next all-complete notification comes at the wrong time."})
		}
	}
	for _, nid := range sortedKeys(st.outbox) {
		if !seenOutbox[nid] {
			n := st.outbox[nid]
			c.add(projection.ViewOutbox, Finding{Delegation: n.Delegation, Parent: n.Parent, Seqs: []uint64{n.Seq},
				Diagnosis: "notification " + nid + " is due since " + fmtT(n.DueAt) + " (record " + itoa(n.Seq) + ") but is not in the outbox: the bridge never gets it."})
		}
	}
	for _, nid := range sortedKeys(st.outbox) {
		if n := st.outbox[nid]; !seenDue[n.Parent+"\x00"+nid] {
			c.add(projection.ViewDue, Finding{Delegation: n.Delegation, Parent: n.Parent, Seqs: []uint64{n.Seq},
				Diagnosis: "notification " + nid + " is due but the due view does not file it under parent " + quote(n.Parent) + ": notifications of that parent leave it out."})
		}
	}
	for _, view := range sortedKeys(c.extra) {
		c.findings = append(c.findings, Finding{
			Code: CodeViewMismatch, Severity: SeverityError, View: view, Seqs: []uint64{},
			Diagnosis: fmt.Sprintf("%d more disagreements in the %s view are not listed.", c.extra[view], view),
			Next:      viewNext,
		})
	}
	return c.findings, true, nil
}

// lastOf returns the sequence number of the last event applied to id.
func (st *state) lastOf(id string) uint64 {
	if d := st.ds[id]; d != nil {
		return d.last
	}
	return 0
}

func cycleText(c projection.CycleView) string {
	return fmt.Sprintf("cycle %d (%d active, %d members, %d notified)", c.Cycle, c.Active, c.Members, c.Notified)
}

// outboxDiff lists what differs between a stored notification and the
// expected one; the text is rendered when read, so it is not compared.
func outboxDiff(got, want *projection.Notification) string {
	var diffs []string
	cmpf := func(name string, g, w any) {
		if g != w {
			diffs = append(diffs, fmt.Sprintf("%s %v, want %v", name, g, w))
		}
	}
	cmpf("kind", got.Kind, want.Kind)
	cmpf("delegation", got.Delegation, want.Delegation)
	cmpf("parent", got.Parent, want.Parent)
	cmpf("cycle", got.Cycle, want.Cycle)
	cmpf("remaining", got.Remaining, want.Remaining)
	if !got.DueAt.Equal(want.DueAt) {
		diffs = append(diffs, "due "+fmtT(got.DueAt)+", want "+fmtT(want.DueAt))
	}
	cmpf("failures", got.Failures, want.Failures)
	cmpf("last error", got.LastError, want.LastError)
	cmpf("seq", got.Seq, want.Seq)
	return strings.Join(diffs, "; ")
}

// recordDiff names the fields where a stored record differs from the
// replayed one.
func recordDiff(stored []byte, want *fsm.Delegation) string {
	got, err := fsm.UnmarshalDelegation(stored)
	if err != nil {
		return "the stored record does not decode (" + err.Error() + ")"
	}
	gm, wm := jsonFields(got), jsonFields(*want)
	var diffs []string
	for _, k := range sortedKeys(union(gm, wm)) {
		g, w := gm[k], wm[k]
		if g == w {
			continue
		}
		diffs = append(diffs, k+" "+short(g)+", want "+short(w))
	}
	if len(diffs) == 0 {
		return "the encodings differ"
	}
	return strings.Join(diffs, "; ")
}

func jsonFields(d fsm.Delegation) map[string]string {
	raw, err := json.Marshal(d)
	out := map[string]string{}
	if err != nil {
		return out
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return out
	}
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

func union(a, b map[string]string) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// short shows a JSON value, cut to 60 bytes; "(none)" for a missing one.
func short(v string) string {
	if v == "" {
		return "(none)"
	}
	return cut(v, 60)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
