package artifact

import (
	"strings"
	"testing"
)

// oneLineCases: white space of every kind at the ends, in runs and alone,
// control characters that are not white space, and invalid UTF-8.
var oneLineCases = []string{
	"", " ", "a", "a b", "Three login paths; the refresh races the logout.",
	" a", "a ", "a  b", "a\tb", "a\nb", "a\r\nb", "a\vb", "a\fb", "\n",
	"a\u00a0b", "a\u0085b", "a\u2028b", "a\u3000b", "a\x01b", "a\x7fb",
	"a \xff b", "\xff", "a\xc2", "→ arrow", "a →  b",
}

// TestFmtOneLine: fmtOneLine is strings.Fields joined by single spaces,
// whether it takes the copy or returns its argument.
func TestFmtOneLine(t *testing.T) {
	for _, s := range oneLineCases {
		if got, want := fmtOneLine(s), strings.Join(strings.Fields(s), " "); got != want {
			t.Errorf("fmtOneLine(%q) = %q, want %q", s, got, want)
		}
	}
}

func FuzzFmtOneLine(f *testing.F) {
	for _, s := range oneLineCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := fmtOneLine(s), strings.Join(strings.Fields(s), " "); got != want {
			t.Errorf("fmtOneLine(%q) = %q, want %q", s, got, want)
		}
	})
}
