package eventlog

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// The meta bucket's format key holds one byte. Its low six bits are the
// layout's version (FormatVersion, or an earlier one: 1 for a file from
// before chunks, 2 for one from before chunks listed their checksums in
// their record);
// its high two are flags for a file that no process may write as a plain
// log:
//
//   - sealedBit: the log was migrated to another store and the file is
//     kept for reading (seal.go; the migrated key says where it went);
//   - replicaBit: the file is a replica of a shared log, which only the
//     process following that log may write (upstream.go; the upstream key
//     says which log).
//
// A flag is set in the transaction that writes its key. The key alone
// would do for this build, but not for the builds before it: they ignore
// keys they do not know, and would serve a sealed log, or write into a
// replica records the shared log never sees, so that the two diverge
// without a word. Every build checks the format byte, though, and refuses
// one it does not know, readers and writers alike: builds before seals
// accept 1 and 2 only, and builds with seals but before replicaBit accept
// sealedBit but not replicaBit: each flag keeps out every build that does
// not know its key.
//
// This build reads the layout under the flags, so readers (replay,
// inspect, verify, show) open a flagged file as any other; a writer's
// Open refuses a sealed file, and a replica's file without its upstream.
// A file with no flag keeps its format byte exactly, so a plain log this
// build writes still opens in older builds. The flags change no layout: no
// view depends on them, and nothing is rebuilt.
//
// A replica's file written before replicaBit (the upstream key alone) gets
// it the next time a replica of its upstream opens it, in one transaction.
// No file is both: Seal refuses a replica's file (its log already lives
// upstream), a writer's Open refuses a sealed file before it could bind it
// to an upstream, and migrate --from etcd writes a plain file.
const (
	sealedBit   = 0x80
	replicaBit  = 0x40
	formatFlags = sealedBit | replicaBit
)

// knownFormat accepts the values of the format key this build reads: the
// layout FormatVersion, or 1 (every payload inline) or 2 (chunks with their
// own checksums), which a writer upgrades (initFormat); under any flags.
// Anything else is a file of a later build.
func knownFormat(v []byte) error {
	if len(v) == 1 {
		if layout := v[0] &^ formatFlags; layout >= 1 && layout <= FormatVersion {
			return nil
		}
	}
	return fmt.Errorf("%w: file format %v is not %d; this build cannot read it", ErrCorrupt, v, FormatVersion)
}

// formatFlag reports whether flag is set in the format byte.
func formatFlag(meta *bolt.Bucket, flag byte) bool {
	v := meta.Get(metaFormat)
	return len(v) == 1 && v[0]&flag != 0
}

// setFormatFlag sets flag in the format byte, keeping the layout and the
// other flag; it writes nothing when flag is already set.
func setFormatFlag(meta *bolt.Bucket, flag byte) error {
	v := meta.Get(metaFormat)
	if err := knownFormat(v); err != nil {
		return err
	}
	if v[0]&flag != 0 {
		return nil
	}
	return meta.Put(metaFormat, []byte{v[0] | flag})
}

// initFormat, in a writer's Open, writes the format byte of a new file,
// checks an existing one, and upgrades the layout of a file of an earlier
// version to FormatVersion (its records stay as they are: this build reads
// them), keeping its flags: a writer that then refuses
// the file (a replica's, without its upstream) leaves it flagged.
func initFormat(meta *bolt.Bucket) error {
	v := meta.Get(metaFormat)
	if v == nil {
		return meta.Put(metaFormat, []byte{FormatVersion})
	}
	if err := knownFormat(v); err != nil {
		return err
	}
	if v[0]&^formatFlags == FormatVersion {
		return nil
	}
	return meta.Put(metaFormat, []byte{FormatVersion | v[0]&formatFlags})
}
