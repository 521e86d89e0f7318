package eventlog

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ScanChunk is how many records Records reads in one read transaction, for
// the contract suite's reads across them (contract_test.go).
const ScanChunk = scanChunk

// ReplicaBit is the format byte's flag on a replica's file (formatbits.go).
const ReplicaBit = replicaBit

// FormatByte returns the format byte of the log file at path, which no
// process holds open, read as any build reads it.
func FormatByte(path string) (byte, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var b byte
	err = db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(metaFormat)
		if len(v) != 1 {
			return fmt.Errorf("format %v, want one byte", v)
		}
		b = v[0]
		return nil
	})
	return b, err
}

// SetFormatByte writes the format byte of the log file at path, which no
// process holds open: a file as another build wrote it.
func SetFormatByte(path string, b byte) error {
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(metaFormat, []byte{b}) })
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

// OlderBuilds are the format checks of earlier releases, as they were
// written (formatbits.go's history): each reports whether that build opens
// a file with format byte v.
var OlderBuilds = []struct {
	Name  string
	Opens func(v byte) bool
}{
	{"before seals", func(v byte) bool { return v == 1 || v == 2 }},
	{"with seals, before the replica bit", func(v byte) bool { return v&^0x80 == 1 || v&^0x80 == 2 }},
}
