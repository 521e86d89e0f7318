package artifact

import (
	"bytes"
	"fmt"
	"strings"
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

// TestRenderingLongTexts: for results longer than a hash block, with runes
// of every width across the block boundaries and invalid UTF-8 near them,
// the rendering written from its parts (WriteRendering) is Render's bytes,
// and its size and hash are theirs.
func TestRenderingLongTexts(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("a€😀é", hashBlock/3)
	texts := map[string]string{"runes": long}
	for _, shift := range []int{0, 1, 2, 3} {
		texts[fmt.Sprintf("runes shifted %d", shift)] = strings.Repeat("x", shift) + long
		at := hashBlock - shift
		texts[fmt.Sprintf("invalid at %d", at)] = long[:at] + "\xff" + long[at:]
		texts[fmt.Sprintf("cut rune at %d", at)] = strings.Repeat("y", at) + "\xe2\x82" + long
		texts[fmt.Sprintf("continuation run at %d", at)] = strings.Repeat("z", at) + "\x80\x80\x80\x80\x80" + long
	}
	for name, text := range texts {
		d := formatBase()
		d.State, d.CompletedAt, d.Result = fsm.Complete, formatT0.Add(time.Minute), text
		want := Render(&d)
		r := Rendered(&d)
		if sum := r.Sum(); sum != Sum(want) || r.Len() != int64(len(want)) {
			t.Errorf("%s: rendering is %d bytes, %016x; Render is %d bytes, %016x", name, r.Len(), sum, len(want), Sum(want))
		}
		rel, err := RelPath("0123456789abcdef", "ses_root", d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteRendering(dir, rel, Rendered(&d)); err != nil {
			t.Fatal(err)
		}
		if got, err := Read(dir, rel); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: written rendering differs from Render (%d bytes against %d): %v", name, len(got), len(want), err)
		}
	}
}
