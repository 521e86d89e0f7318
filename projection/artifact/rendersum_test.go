package artifact

import (
	"bytes"
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
		if !RenderIs(&tc.d, want) {
			t.Errorf("%s: RenderIs(Render) = false", tc.name)
		}
		raw := renderRaw(&tc.d) // the pieces as they are: Render's bytes only when they are UTF-8
		if got := RenderIs(&tc.d, raw); got != bytes.Equal(raw, want) {
			t.Errorf("%s: RenderIs(the pieces, not replaced) = %v", tc.name, got)
		}
		for _, other := range [][]byte{nil, want[:len(want)-1], append(bytes.Clone(want), 'x'), append([]byte("X"), want[1:]...)} {
			if RenderIs(&tc.d, other) {
				t.Errorf("%s: RenderIs(%q) = true", tc.name, other)
			}
		}
	}
}

// renderRaw is Render without its replacement of what is not UTF-8.
func renderRaw(d *fsm.Delegation) []byte {
	var p renderPieces
	var b []byte
	for _, s := range p.of(d) {
		b = append(b, s...)
	}
	return b
}
