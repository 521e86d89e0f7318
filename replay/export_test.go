package replay

// SetRoundEntries makes the view comparison's rounds n entries long, so
// that a small store spans many rounds; the returned func restores it.
func SetRoundEntries(n int) (restore func()) {
	old := roundEntries
	roundEntries = n
	return func() { roundEntries = old }
}
