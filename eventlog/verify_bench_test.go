package eventlog

import (
	"context"
	"flag"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var verifyBenchRecords = flag.Int("verify.records", 200_000, "records in the log of BenchmarkVerifyBesideWriter")

// BenchmarkVerifyBesideWriter runs Verify on a log of -verify.records
// records (256-byte payloads, a new stream every 8) while a writer appends
// one record per commit, twice: in rounds as Verify reads (verifyRound),
// and with rounds made unbounded, the baseline: each check (records, chunks,
// stream index, ...) then reads in one transaction, as Verify read before
// (when all the checks shared one). It reports, for each,
// the writer's slowest append over its slowest alone for as long
// (stall-ratio-*), how far the file's pages grew per append
// (pages-growth-*-B/append), and the longest round (worst-round-ms-*, the
// time between two rounds' starts, at most two rounds across two checks:
// how long a read transaction stayed open at most; Verify's whole time
// when each check is one round).
//
//	go test ./eventlog -run '^$' -bench BenchmarkVerifyBesideWriter -benchtime 1x
func BenchmarkVerifyBesideWriter(b *testing.B) {
	l := openTest(b, filepath.Join(b.TempDir(), "log.db"), Options{})
	fillBench(b, l, *verifyBenchRecords)
	ctx := context.Background()

	pages := func() int64 {
		var n int64
		if err := l.View(func(tx *Tx) error { n = tx.Pages(); return nil }); err != nil {
			b.Fatal(err)
		}
		return n
	}
	// writer appends one record per commit until stop closes, a new stream
	// every 8 records (numbered on from run to run, so that every run does
	// the same), and returns its slowest append, its appends and the pages
	// grown.
	i := 0
	writer := func(stop <-chan struct{}) (worst time.Duration, n int, grown int64) {
		before := pages()
		for ; ; i++ {
			select {
			case <-stop:
				return worst, n, pages() - before
			default:
			}
			start := time.Now()
			if _, err := l.Append(ctx, Append{Stream: fmt.Sprint("writer-", i/8), Entries: []Entry{benchEntry()}}); err != nil {
				b.Error(err)
				return worst, n, 0
			}
			worst, n = max(worst, time.Since(start)), n+1
		}
	}
	run := func(name string, round int, roundTime time.Duration) {
		oldRound, oldTime := verifyRound, verifyRoundTime
		verifyRound, verifyRoundTime = round, roundTime
		defer func() { verifyRound, verifyRoundTime = oldRound, oldTime }()
		// The time between two rounds' starts, or across two checks
		// (two rounds); the first round is not timed from Verify's start,
		// which walks the pages first without a transaction.
		var worstRound time.Duration
		var last time.Time
		verifyBetweenRounds = func() {
			if !last.IsZero() {
				worstRound = max(worstRound, time.Since(last))
			}
			last = time.Now()
		}
		defer func() { verifyBetweenRounds = nil }()

		stop := make(chan struct{})
		var wg sync.WaitGroup
		var worst time.Duration
		var n int
		var grown int64
		wg.Add(1)
		go func() { defer wg.Done(); worst, n, grown = writer(stop) }()
		start := time.Now()
		if err := l.Verify(ctx); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		if last.IsZero() { // one round per check: each as long as Verify
			worstRound = took
		}
		close(stop)
		wg.Wait()

		// The writer alone for as long.
		stop = make(chan struct{})
		wg.Add(1)
		var worstAlone time.Duration
		var nAlone int
		var grownAlone int64
		go func() { defer wg.Done(); worstAlone, nAlone, grownAlone = writer(stop) }()
		time.Sleep(took)
		close(stop)
		wg.Wait()

		b.ReportMetric(took.Seconds()*1000, "verify-ms-"+name)
		b.ReportMetric(float64(worstRound.Microseconds())/1000, "worst-round-ms-"+name)
		b.ReportMetric(float64(worst)/float64(max(worstAlone, 1)), "stall-ratio-"+name)
		b.ReportMetric(float64(n), "appends-beside-"+name)
		b.ReportMetric(float64(grown)/math.Max(float64(n), 1), "pages-growth-beside-B/append-"+name)
		b.ReportMetric(float64(grownAlone)/math.Max(float64(nAlone), 1), "pages-growth-alone-B/append-"+name)
	}
	for b.Loop() {
		// The first run after the fill meets the file's growth that the
		// fill left due: take turns at going first.
		verifyBenchTurn++
		if verifyBenchTurn%2 == 1 {
			run("rounds", verifyRound, verifyRoundTime)
			run("unbounded", math.MaxInt, time.Duration(math.MaxInt64))
		} else {
			run("unbounded", math.MaxInt, time.Duration(math.MaxInt64))
			run("rounds", verifyRound, verifyRoundTime)
		}
	}
}

// verifyBenchTurn counts BenchmarkVerifyBesideWriter's runs (-count).
var verifyBenchTurn int

// fillBench appends n records with 64 appenders, a new stream every 8
// records, 8 records per append.
func fillBench(b *testing.B, l *Log, n int) {
	var wg sync.WaitGroup
	const appenders = 64
	per := n / appenders / 8
	for g := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				es := make([]Entry, 8)
				for j := range es {
					es[j] = benchEntry()
				}
				if _, err := l.Append(context.Background(), Append{Stream: fmt.Sprint("fill-", g, "-", i), Entries: es}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
