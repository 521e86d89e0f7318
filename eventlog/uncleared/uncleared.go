// Package uncleared allocates byte buffers that are written over whole
// before they are read, without clearing them first.
package uncleared

import (
	"strings"
	"unsafe"
)

// Large is the capacity from which Make does not clear: below it, clearing
// costs next to nothing.
const Large = 64 << 10

// Make returns an empty slice of capacity n. From Large bytes its memory is
// not cleared first: a payload of megabytes (a result) is written over at
// once, and clearing it first cost a pass over it as long as the copy
// that follows. Such memory is what strings.Builder allocates, which it
// does not clear; nothing else holds it. The caller must write every byte
// it then reads.
func Make(n int) []byte {
	if n < Large {
		return make([]byte, 0, n)
	}
	var sb strings.Builder
	sb.Grow(n)
	sb.WriteByte(0) // a string of one byte, whose data is the buffer's start
	return unsafe.Slice(unsafe.StringData(sb.String()), n)[:0]
}
