//go:build !unix

package claudecode

const (
	oNoFollow = 0
	oNonBlock = 0
)
