package eventlog_test

import (
	"path/filepath"
	"testing"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/eventlogtest"
)

// TestContract runs the log's contract (eventlogtest) on a plain bbolt
// file; etcdlog's tests run it on a replica of etcd.
func TestContract(t *testing.T) {
	eventlogtest.Run(t, func(t *testing.T) eventlogtest.Backend {
		path := filepath.Join(t.TempDir(), "log.db")
		open := func(t *testing.T) eventlogtest.Log {
			l, err := eventlog.Open(path, eventlog.Options{})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			t.Cleanup(func() { l.Close() })
			return l
		}
		return eventlogtest.Backend{Log: open(t), Reopen: open, MaxEntries: eventlog.MaxEntries, PageLen: eventlog.ScanChunk}
	})
}
