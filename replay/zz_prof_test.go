package replay

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/projection"
)

func TestZZFoldCost(t *testing.T) {
	dir := os.Getenv("ZZDIR")
	if dir == "" {
		t.Skip()
	}
	l, err := eventlog.Open(filepath.Join(dir, projection.LogFile), eventlog.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	n := 0
	for r, err := range l.Records(1) {
		if err != nil {
			t.Fatal(err)
		}
		n += len(r.Payload)
	}
	t.Logf("records only: %v", time.Since(start))
	opts := Options{}
	start = time.Now()
	st := newState(nil)
	sc := &scanner{ctx: context.Background(), log: l, opts: &opts, st: st}
	st.stream, st.drop = sc.stream, true
	if err := sc.scan(1); err != nil {
		t.Fatal(err)
	}
	t.Logf("scan+fold: %v, %d kept, %d applied", time.Since(start), len(st.ds), st.applied)
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start = time.Now()
	rep, err := Run(context.Background(), l, dir, opts)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano())
	t.Logf("Run: %v wall, %v cpu, %v", time.Since(start), cpu, err)
	_ = rep
}
