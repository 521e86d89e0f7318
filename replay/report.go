package replay

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/delegations/delegations/fsm"
)

// Report is what Run and Verify found. Its JSON form uses camelCase names
// and the plugin's timestamps (RFC 3339, UTC, milliseconds).
type Report struct {
	Mode         string            `json:"mode"`    // ModeReplay or ModeVerify
	DataDir      string            `json:"dataDir"` // as given
	Until        Point             `json:"until"`   // {} for the whole log
	Now          time.Time         `json:"now"`     // what ages and deadlines were measured against
	Last         uint64            `json:"lastSeq"` // the last record in the log
	Through      uint64            `json:"throughSeq"`
	Events       uint64            `json:"events"` // records applied
	Delegations  int               `json:"delegations"`
	States       map[fsm.State]int `json:"states"`              // delegations by replayed status
	ViewsChecked bool              `json:"viewsChecked"`        // false with Until, when the views are behind, or with damaged records
	ViewsNote    string            `json:"viewsNote,omitempty"` // why the views were not compared
	Artifacts    int               `json:"artifactsChecked"`
	// The findings by severity, listed or not.
	Errors   int `json:"errors"`
	Warnings int `json:"warnings"`
	Infos    int `json:"infos"`
	// Findings lists at most listLimit findings of each code, the first
	// in its order; Unlisted counts, by code, those past them.
	Findings []Finding      `json:"findings"`
	Unlisted map[string]int `json:"unlisted,omitempty"`

	found findingSet // what Findings and the counts are made of
}

// add adds findings, keeping the order and the counts.
func (r *Report) add(fs ...Finding) {
	for _, f := range fs {
		r.found.add(f)
	}
	r.found.fill(r)
}

// Failed reports whether the report holds an error or a warning: the CLI
// exits 1 then. Info findings (a fresh notification, an unread result) do
// not count.
func (r *Report) Failed() bool { return r.Errors+r.Warnings > 0 }

// For returns the findings about delegation id.
func (r *Report) For(id string) []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Delegation == id {
			out = append(out, f)
		}
	}
	return out
}

// MarshalJSON encodes r with the times as the plugin writes them.
func (r Report) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Mode         string            `json:"mode"`
		DataDir      string            `json:"dataDir"`
		Until        Point             `json:"until"`
		Now          string            `json:"now"`
		Last         uint64            `json:"lastSeq"`
		Through      uint64            `json:"throughSeq"`
		Events       uint64            `json:"events"`
		Delegations  int               `json:"delegations"`
		States       map[fsm.State]int `json:"states"`
		ViewsChecked bool              `json:"viewsChecked"`
		ViewsNote    string            `json:"viewsNote,omitempty"`
		Artifacts    int               `json:"artifactsChecked"`
		Errors       int               `json:"errors"`
		Warnings     int               `json:"warnings"`
		Infos        int               `json:"infos"`
		Findings     []Finding         `json:"findings"`
		Unlisted     map[string]int    `json:"unlisted,omitempty"`
	}{r.Mode, r.DataDir, r.Until, fsm.FormatTime(r.Now), r.Last, r.Through, r.Events, r.Delegations, r.States,
		r.ViewsChecked, r.ViewsNote, r.Artifacts, r.Errors, r.Warnings, r.Infos, r.Findings, r.Unlisted})
}

// WriteText writes the report for people: a summary, then the findings
// grouped by delegation (the log and the views as a whole first), each
// with its diagnosis, the step that did not happen and what to run next.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	title := "Replay"
	if r.Mode == ModeVerify {
		title = "Verify"
	}
	fmt.Fprintf(&b, "%s of %s: %d events", title, r.DataDir, r.Events)
	if r.Through > 0 {
		fmt.Fprintf(&b, " (records 1 to %d of %d)", r.Through, r.Last)
	}
	b.WriteString(", " + plural(r.Delegations, "delegation"))
	if len(r.States) > 0 {
		var parts []string
		for _, s := range append(fsm.States(), "") {
			if n := r.States[s]; n > 0 {
				name := string(s)
				if name == "" {
					name = "unregistered"
				}
				parts = append(parts, fmt.Sprintf("%d %s", n, name))
			}
		}
		for s, n := range r.States {
			if !slices.Contains(fsm.States(), s) && s != "" && n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, s))
			}
		}
		b.WriteString(" (" + strings.Join(parts, ", ") + ")")
	}
	b.WriteString(".\n")
	if !r.Until.IsZero() {
		at := r.Until.String()
		if r.Until.Seq != 0 {
			at = "record " + at
		}
		fmt.Fprintf(&b, "State as of %s; ages", at)
	} else {
		b.WriteString("Ages")
	}
	fmt.Fprintf(&b, " measured at %s. ", fsm.FormatTime(r.Now))
	switch {
	case r.ViewsChecked:
		b.WriteString("Views compared with the log; ")
	case r.ViewsNote != "":
		b.WriteString("Views not compared (" + r.ViewsNote + "); ")
	default:
		b.WriteString("Views not compared; ")
	}
	b.WriteString(plural(r.Artifacts, "artifact") + " checked.\n")

	var group string
	for i := range r.Findings {
		f := &r.Findings[i]
		g := f.Delegation
		header := f.Delegation
		if f.Status != "" {
			header += " (" + string(f.Status) + ")"
		}
		if g == "" {
			g, header = "\x00"+f.Parent, "the log and its views"
			if f.Parent != "" {
				header = "parent session " + f.Parent
			}
		}
		if i == 0 || g != group {
			b.WriteString("\n" + header + "\n")
			group = g
		}
		fmt.Fprintf(&b, "  %-7s %s", f.Severity, f.Code)
		if f.View != "" {
			b.WriteString(" [" + f.View + "]")
		}
		switch len(f.Seqs) {
		case 0:
		case 1:
			b.WriteString("  record " + seqText(f.Seqs))
		default:
			b.WriteString("  records " + seqText(f.Seqs))
		}
		b.WriteString("\n")
		b.WriteString("          " + f.Diagnosis + "\n")
		if f.Missing != "" {
			b.WriteString("          missing step: " + f.Missing + "\n")
		}
		if f.Next != "" {
			b.WriteString("          next: " + f.Next + "\n")
		}
	}
	if len(r.Unlisted) > 0 {
		codes := slices.Sorted(maps.Keys(r.Unlisted))
		b.WriteString("\nNot listed: ")
		for i, code := range codes {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%d more %s", r.Unlisted[code], code)
		}
		fmt.Fprintf(&b, ". Only the first %d findings of each code are listed, in the log's order; fix those and run again to see the next.\n", listLimit)
	}
	if len(r.Findings)+len(r.Unlisted) == 0 {
		b.WriteString("\nNo findings.\n")
	} else {
		fmt.Fprintf(&b, "\n%s, %s, %s.\n", plural(r.Errors, "error"), plural(r.Warnings, "warning"), plural(r.Infos, "info finding"))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// String returns the text WriteText writes.
func (r *Report) String() string {
	var b strings.Builder
	_ = r.WriteText(&b)
	return b.String()
}

func seqText(seqs []uint64) string {
	parts := make([]string, len(seqs))
	for i, s := range seqs {
		parts[i] = itoa(s)
	}
	return strings.Join(parts, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
