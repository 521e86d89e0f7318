package ui

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
)

// fill registers n delegations over 20 root sessions and two projects,
// concurrently (the log's group commit); every 4th is started, every 3rd
// completed, so that every group of the board has members.
func (p *page) fill(tb testing.TB, n int) {
	ctx := context.Background()
	work := make(chan int)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := range work {
				root := fmt.Sprintf("ses_root%02d", i%20)
				d, err := p.svc.Register(ctx, api.RegisterRequest{
					RootSessionID: root, ParentSessionID: root, Agent: "researcher",
					ProjectID: fmt.Sprintf("proj%d", i%2), Model: "m1", Prompt: fmt.Sprintf("task %d", i),
				})
				if err == nil && i%4 == 0 {
					_, err = p.svc.Start(ctx, api.StartRequest{ID: d.ID})
				}
				if err == nil && i%3 == 0 {
					_, err = p.svc.Complete(ctx, api.CompleteRequest{ID: d.ID, Result: "done"})
				}
				if err != nil {
					tb.Error(err)
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
}

// BenchmarkBoard measures a board page (GET /, the HTML with every group's
// first page) on a store of 10,000 delegations against the same page on a
// store of 20, in one run: ratio is the cost of the big board over the
// small one. Filling the big store takes a few seconds; -short skips it.
func BenchmarkBoard(b *testing.B) {
	if testing.Short() {
		b.Skip("-short: filling 10,000 delegations takes a few seconds")
	}
	pages := map[int]*page{}
	for _, n := range []int{20, 10000} {
		p := newPage(b)
		p.fill(b, n)
		p.waitSeq()
		pages[n] = p
	}
	get := func(p *page, q string) {
		req := httptest.NewRequest("GET", "/"+q, nil)
		req.Host = "127.0.0.1:" + p.srv.port
		req.AddCookie(&http.Cookie{Name: p.srv.cookieName(), Value: p.srv.token})
		w := httptest.NewRecorder()
		p.srv.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("GET /%s: %d %s", q, w.Code, w.Body)
		}
		io.Copy(io.Discard, w.Body)
	}
	for _, q := range []string{"", "?root=ses_root07", "?group=recent&page=20"} {
		b.Run("query="+q, func(b *testing.B) {
			var small, big time.Duration
			for b.Loop() {
				t0 := time.Now()
				get(pages[20], q)
				t1 := time.Now()
				get(pages[10000], q)
				small += t1.Sub(t0)
				big += time.Since(t1)
			}
			n := float64(b.N)
			b.ReportMetric(float64(big.Microseconds())/n, "us/page-10000")
			b.ReportMetric(float64(small.Microseconds())/n, "us/page-20")
			b.ReportMetric(float64(big)/float64(small), "ratio")
		})
	}
}
