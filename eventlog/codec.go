package eventlog

// The record encoding and append validation, exported for the other stores
// of the same log (eventlog/etcdlog): a record is the same bytes, checked
// by the same checksum, wherever it is kept, and an append is refused for
// the same reasons.

// EncodeRecord returns the stored encoding of one record under sequence
// number seq, checksum included. The caller has validated the sizes (see
// ValidateAppend).
func EncodeRecord(seq uint64, kind uint16, unixNano int64, stream, key string, payload []byte) []byte {
	return appendRecord(make([]byte, 0, encodedLen(len(stream), len(key), len(payload))),
		seq, kind, unixNano, stream, key, payload)
}

// DecodeRecord decodes and checks the record stored under seq. A record
// that fails its checks is a *CorruptError naming seq. The result owns its
// memory.
func DecodeRecord(seq uint64, b []byte) (Record, error) {
	return decodeRecord(seq, b)
}

// ValidateAppend reports why a would be refused before anything is
// written (an error wrapping ErrInvalid), or nil.
func ValidateAppend(a Append) error {
	return validate(a)
}

// ValidateStream reports why stream is not a valid stream id (an error
// wrapping ErrInvalid), or nil.
func ValidateStream(stream string) error {
	return validStream(stream)
}
