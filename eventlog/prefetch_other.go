//go:build !linux

package eventlog

import "os"

// prefetchFile does nothing where the system cannot tell what is cached:
// the reads fault the pages in as before.
func prefetchFile(f *os.File, size int64, quit <-chan struct{}) {}
