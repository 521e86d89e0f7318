package api

// BenchmarkSharedLogCommand: what a command costs through a daemon whose
// log is shared through etcd (its data directory a replica) against a
// daemon on a bbolt log alone, measured in the same run:
//
//	go test ./cmd/delegations/api -run '^$' -bench SharedLogCommand -benchtime 10x
//
// 16 clients, each with a delegation of its own, send progress commands
// (one event each) to an in-process daemon over its unix socket; the
// etcd is one embedded member in the same process. Reported: commands/s
// and the 50th and 99th percentile latency of each, and the ratios
// etcd/bbolt.

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/etcdlog"
	"github.com/delegations/delegations/eventlog/etcdlog/etcdtest"
	"github.com/delegations/delegations/fsm"
)

// serveShared runs a daemon on dir with cfg's Upstream until the benchmark
// ends and returns a client of it.
func serveShared(b *testing.B, dir string, upstream func(context.Context) (eventlog.Upstream, error)) *Client {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Status, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{DataDir: dir, Upstream: upstream, Ready: func(st Status) { ready <- st }})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		b.Fatalf("serve: %v", err)
	}
	c, err := Dial(ctx, DefaultSocket(dir))
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		c.Close()
		cancel()
		if err := <-done; err != nil {
			b.Errorf("serve: %v", err)
		}
	})
	return c
}

func BenchmarkSharedLogCommand(b *testing.B) {
	const clients, each = 16, 32
	cluster := etcdtest.Start(b, 1)
	cli := cluster.Client()
	type side struct {
		name      string
		client    *Client
		ids       []string
		wall      time.Duration
		latencies []time.Duration
	}
	sides := []*side{
		{name: "etcd", client: serveShared(b, b.TempDir(), func(ctx context.Context) (eventlog.Upstream, error) {
			return etcdlog.Open(ctx, cli, etcdlog.Options{})
		})},
		{name: "bbolt", client: serveShared(b, b.TempDir(), nil)},
	}
	ctx := context.Background()
	for _, s := range sides {
		for i := range clients {
			var d fsm.Delegation
			if err := s.client.Call(ctx, "register", RegisterRequest{
				RootSessionID: "ses_root", ParentSessionID: fmt.Sprintf("ses_parent%d", i), Agent: "explore", ProjectID: "proj",
				Prompt: "benchmark", TimeoutMs: int64(24 * time.Hour / time.Millisecond),
			}, &d); err != nil {
				b.Fatal(err)
			}
			s.ids = append(s.ids, d.ID)
		}
	}
	var total int
	for b.Loop() {
		// One round on each, alternately, so that noise hits both alike.
		for _, s := range sides {
			lat := make([][]time.Duration, clients)
			start := time.Now()
			var wg sync.WaitGroup
			for i := range clients {
				wg.Go(func() {
					for n := range each {
						t := time.Now()
						var d fsm.Delegation
						if err := s.client.Call(ctx, "progress", ProgressRequest{ID: s.ids[i], Message: fmt.Sprint("step ", n)}, &d); err != nil {
							b.Error(err)
							return
						}
						lat[i] = append(lat[i], time.Since(t))
					}
				})
			}
			wg.Wait()
			s.wall += time.Since(start)
			for _, l := range lat {
				s.latencies = append(s.latencies, l...)
			}
		}
		total += clients * each
	}
	rate := map[string]float64{}
	p50 := map[string]time.Duration{}
	for _, s := range sides {
		rate[s.name] = float64(total) / s.wall.Seconds()
		slices.Sort(s.latencies)
		p50[s.name] = s.latencies[len(s.latencies)/2]
		b.ReportMetric(rate[s.name], s.name+"-commands/s")
		b.ReportMetric(float64(p50[s.name].Microseconds())/1000, s.name+"-p50-ms")
		b.ReportMetric(float64(s.latencies[len(s.latencies)*99/100].Microseconds())/1000, s.name+"-p99-ms")
	}
	b.ReportMetric(rate["etcd"]/rate["bbolt"], "throughput-ratio")
	b.ReportMetric(float64(p50["etcd"])/float64(p50["bbolt"]), "p50-latency-ratio")
}
