package eventlog

// ScanChunk is how many records Records reads in one read transaction, for
// the contract suite's reads across them (contract_test.go).
const ScanChunk = scanChunk
