package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/etcdlog"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdFlags are serve's options for a log shared through etcd: the data
// directory's log then replicates the log kept in etcd, which several
// daemons, on one machine or many, share.
type etcdFlags struct {
	endpoints, prefix       *string
	cacert, cert, key       *string
	dialTimeout, reqTimeout *time.Duration
}

func addEtcdFlags(fs *flag.FlagSet) *etcdFlags {
	// Each has an environment variable, so that the daemons a bridge
	// starts (serve --detach, with no other flags) share the log too.
	env := func(name, fallback string) string {
		if v := os.Getenv(name); v != "" {
			return v
		}
		return fallback
	}
	return &etcdFlags{
		endpoints:   fs.String("etcd", env("DELEGATIONS_ETCD", ""), "share the log through this etcd cluster: its client URLs, comma-separated (https://host:2379,...); the data directory then holds this daemon's replica of it (default: $DELEGATIONS_ETCD)"),
		prefix:      fs.String("etcd-prefix", env("DELEGATIONS_ETCD_PREFIX", "/delegations/"), "the key prefix of the shared log in etcd ($DELEGATIONS_ETCD_PREFIX)"),
		cacert:      fs.String("etcd-cacert", env("DELEGATIONS_ETCD_CACERT", ""), "verify etcd's certificate with this CA bundle, PEM ($DELEGATIONS_ETCD_CACERT)"),
		cert:        fs.String("etcd-cert", env("DELEGATIONS_ETCD_CERT", ""), "identify to etcd with this client certificate, PEM ($DELEGATIONS_ETCD_CERT)"),
		key:         fs.String("etcd-key", env("DELEGATIONS_ETCD_KEY", ""), "the key of --etcd-cert, PEM ($DELEGATIONS_ETCD_KEY)"),
		dialTimeout: fs.Duration("etcd-dial-timeout", 5*time.Second, "bound on connecting to etcd"),
		reqTimeout:  fs.Duration("etcd-timeout", 5*time.Second, "bound on every request to etcd; past it a command fails and can be retried"),
	}
}

// client connects to etcd as the flags say; nil when --etcd is not given.
func (f *etcdFlags) client() (*clientv3.Client, error) {
	if *f.endpoints == "" {
		if *f.cacert != "" || *f.cert != "" || *f.key != "" {
			return nil, usagef("--etcd-cacert, --etcd-cert and --etcd-key (or their environment variables) need --etcd ($DELEGATIONS_ETCD)")
		}
		return nil, nil
	}
	var eps []string
	for _, ep := range strings.Split(*f.endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	if len(eps) == 0 {
		return nil, usagef("--etcd %q names no endpoint", *f.endpoints)
	}
	if (*f.cert == "") != (*f.key == "") {
		return nil, usagef("--etcd-cert and --etcd-key go together")
	}
	if !strings.HasSuffix(*f.prefix, "/") || *f.prefix == "/" {
		return nil, usagef("--etcd-prefix %q must end with / and name a directory of its own (such as /delegations/)", *f.prefix)
	}
	cfg := clientv3.Config{
		Endpoints:   eps,
		DialTimeout: *f.dialTimeout,
		Logger:      zap.NewNop(),
	}
	if *f.cacert != "" || *f.cert != "" {
		tlsInfo := transport.TLSInfo{TrustedCAFile: *f.cacert, CertFile: *f.cert, KeyFile: *f.key}
		tc, err := tlsInfo.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(eps, ","), err)
	}
	return cli, nil
}

// upstream opens the shared log on cli, for api.Config.Upstream.
func (f *etcdFlags) upstream(cli *clientv3.Client) func(context.Context) (eventlog.Upstream, error) {
	return func(ctx context.Context) (eventlog.Upstream, error) {
		l, err := etcdlog.Open(ctx, cli, etcdlog.Options{Prefix: *f.prefix, RequestTimeout: *f.reqTimeout})
		if err != nil {
			return nil, err
		}
		return l, nil
	}
}
