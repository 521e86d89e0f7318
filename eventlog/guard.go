package eventlog

import (
	"fmt"
	"runtime/debug"
)

// guard runs fn, which touches bbolt's pages, and turns what a damaged page
// makes bbolt do into a *DamageError naming what was being read: a panic
// (bbolt asserts on pages it does not recognise; a garbage length becomes
// an out-of-range slice) or a memory fault (a page number past the end of
// the map, or a map past the end of a truncated file: SIGSEGV or SIGBUS,
// which only become panics with SetPanicOnFault, per goroutine).
//
// A panic raised by a caller's callback inside fn is reported the same
// way: it is still an error, not a crash, and its value is in the message.
func guard(what string, fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			err = &DamageError{Page: NoPage, Reason: fmt.Sprintf("%s: bbolt failed on a damaged page: %v", what, r)}
		}
	}()
	return fn()
}

// clip shortens a key or value quoted in an error: a damaged page can
// make bbolt return one of any length.
func clip(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}
