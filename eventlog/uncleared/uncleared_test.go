package uncleared

import "testing"

// TestMake: the slice is empty, of the capacity asked, below Large and
// from it, and every byte of it can be written and read back.
func TestMake(t *testing.T) {
	for _, n := range []int{0, 1, Large - 1, Large, 3*Large + 5} {
		b := Make(n)
		if len(b) != 0 || cap(b) < n {
			t.Fatalf("Make(%d): len %d, cap %d", n, len(b), cap(b))
		}
		for i := range n {
			b = append(b, byte(i))
		}
		if cap(b) < n || len(b) != n {
			t.Fatalf("Make(%d) grew: len %d, cap %d", n, len(b), cap(b))
		}
		for i := range n {
			if b[i] != byte(i) {
				t.Fatalf("Make(%d): byte %d reads %d", n, i, b[i])
			}
		}
	}
}
