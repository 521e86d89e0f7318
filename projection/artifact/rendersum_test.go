package artifact

import (
	"testing"
	"time"

	"github.com/delegations/delegations/fsm"
)

// TestRenderSum: RenderSum gives the size and hash of Render's bytes for
// every golden case, for texts that are not UTF-8 (Render replaces them)
// and for a delegation without a child session (no **Session:** line).
func TestRenderSum(t *testing.T) {
	cases := formatCases()
	bad := formatBase()
	bad.State, bad.CompletedAt = fsm.Complete, formatT0.Add(time.Minute)
	bad.Title, bad.Result = "broken \xff title", "ends badly \xe2\x82"
	noSession := formatBase()
	noSession.State, noSession.SessionID = fsm.Cancelled, ""
	badSession := formatBase()
	badSession.State, badSession.SessionID = fsm.Timeout, "ses_\xc3"
	for _, tc := range append(cases, []struct {
		name string
		d    fsm.Delegation
	}{{"not UTF-8", bad}, {"no session", noSession}, {"session not UTF-8", badSession}}...) {
		want := Render(&tc.d)
		size, sum := RenderSum(&tc.d)
		if size != int64(len(want)) || sum != Sum(want) {
			t.Errorf("%s: RenderSum = %d bytes, %016x; Render is %d bytes, %016x", tc.name, size, sum, len(want), Sum(want))
		}
	}
}
