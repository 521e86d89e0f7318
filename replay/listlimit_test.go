package replay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/replay"
)

// TestReportListsTheFirstOfEachCode: a store whose artifacts are all gone
// has a finding per delegation. A report lists the first few of each code
// (those a report without the limit lists first, in the same order),
// counts the rest by code, and its counts by severity, its text, its JSON
// and a rebuild's tally of what it fixed say how many there are in all.
func TestReportListsTheFirstOfEachCode(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	dir := t.TempDir()
	s := open(t, dir, c)
	populate(t, s, c, 40)
	s.Close()
	files := artifacts(t, dir)
	for rel := range files {
		if err := os.Remove(filepath.Join(dir, rel)); err != nil {
			t.Fatal(err)
		}
	}
	verify := func() *replay.Report {
		t.Helper()
		l := openLog(t, dir)
		defer l.Close()
		rep, err := replay.Verify(ctx, l, dir, replay.Options{Now: c.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	all := verify()
	missing := codes(all)[replay.CodeArtifactMissing]
	if missing != len(files) || missing < 20 || len(all.Unlisted) != 0 {
		t.Fatalf("without the limit: %d artifact_missing of %d files, unlisted %v", missing, len(files), all.Unlisted)
	}

	const limit = 3
	defer replay.SetListLimit(limit)()
	rep := verify()
	var want []replay.Finding
	per := map[string]int{}
	for _, f := range all.Findings {
		if per[f.Code]++; per[f.Code] <= limit {
			want = append(want, f)
		}
	}
	if !reflect.DeepEqual(rep.Findings, want) {
		t.Errorf("listed:\n%v\nwant the first %d of each code of the unlimited report:\n%v", rep.Findings, limit, want)
	}
	if got := rep.Unlisted[replay.CodeArtifactMissing]; got != missing-limit {
		t.Errorf("unlisted %v, want %d artifact_missing", rep.Unlisted, missing-limit)
	}
	if rep.Errors != all.Errors || rep.Warnings != all.Warnings || rep.Infos != all.Infos || !rep.Failed() {
		t.Errorf("counts %d/%d/%d, want those of the unlimited report %d/%d/%d", rep.Errors, rep.Warnings, rep.Infos, all.Errors, all.Warnings, all.Infos)
	}
	text := rep.String()
	if want := fmt.Sprintf("%d more %s", missing-limit, replay.CodeArtifactMissing); !strings.Contains(text, want) {
		t.Errorf("text lacks %q:\n%s", want, text)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`"unlisted":{"%s":%d}`, replay.CodeArtifactMissing, missing-limit); !strings.Contains(string(b), want) {
		t.Errorf("JSON lacks %s: %s", want, b)
	}

	res, err := replay.Rebuild(ctx, dir, storeOptions(c), replay.Options{Now: c.Now()})
	if err != nil {
		t.Fatal(err)
	}
	fixedMissing := 0
	for _, f := range res.Fixed {
		if f.Code == replay.CodeArtifactMissing {
			fixedMissing++
		}
	}
	if fixedMissing != limit || res.FixedUnlisted != missing-limit || res.After.Unlisted[replay.CodeArtifactMissing] != 0 {
		t.Errorf("rebuild fixed %d listed artifact_missing and %d unlisted (after: %v), want %d and %d", fixedMissing, res.FixedUnlisted, res.After.Unlisted, limit, missing-limit)
	}
}

// openLog opens the log of the store in dir as verify does without a
// daemon: read-only, no projection.
func openLog(t *testing.T, dir string) *eventlog.Log {
	t.Helper()
	l, err := eventlog.Open(filepath.Join(dir, projection.LogFile), eventlog.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	return l
}
