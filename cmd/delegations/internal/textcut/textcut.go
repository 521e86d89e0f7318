// Package textcut shortens text for the bridges' records and previews.
package textcut

import "unicode/utf8"

// Cut shortens s to at most max bytes, at a rune boundary.
func Cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
