package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/etcdlog"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// etcdFlags are serve's options for a log shared through etcd: the data
// directory's log then replicates the log kept in etcd, which several
// daemons, on one machine or many, share.
type etcdFlags struct {
	endpoints, prefix       *string
	cacert, cert, key       *string
	dialTimeout, reqTimeout *time.Duration
	leaseTTL                *time.Duration
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
		leaseTTL:    fs.Duration("etcd-lease-ttl", DefaultLeaseTTL, "this daemon's lease on etcd: once it has not renewed it for that long (it died, or lost etcd), the other daemons take its delegations over (whole seconds)"),
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
	if *f.leaseTTL < time.Second || *f.leaseTTL%time.Second != 0 {
		return nil, usagef("--etcd-lease-ttl %s: want whole seconds, at least 1s (etcd counts leases in seconds)", *f.leaseTTL)
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
	if err := f.probe(eps, cfg.TLS); err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(eps, ","), err)
	}
	return cli, nil
}

// probe connects to each endpoint once, as the client will, and returns
// an error when none answers within the dial timeout. The client itself
// retries a failed connection until a request's deadline and then
// reports only that deadline, so that TLS files that do not fit etcd's
// (no client certificate, or a CA that did not sign etcd's) would read as
// an etcd that is down; probe names the failure and the option that fixes
// it. An endpoint of another scheme than http or https (a unix socket) is
// left to the client.
func (f *etcdFlags) probe(eps []string, tc *tls.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), *f.dialTimeout)
	defer cancel()
	// asked: etcd asked for a client certificate in a handshake, which
	// it does once it has shown its own and this side has verified it.
	// Refusing the client's comes after the handshake (TLS 1.3), as a
	// closed connection or an alert, whichever the client meets first:
	// the request, not the error, tells what happened.
	var asked atomic.Bool
	hosts := make([]string, len(eps))
	creds := make([]credentials.TransportCredentials, len(eps))
	for i, ep := range eps {
		u, err := url.Parse(ep)
		switch {
		case err != nil || u.Host == "":
			return nil
		case u.Scheme == "http":
			creds[i] = insecure.NewCredentials()
		case u.Scheme == "https":
			c := &tls.Config{} // the system's CAs, as the client's
			if tc != nil {
				c = tc.Clone()
			}
			give := c.GetClientCertificate
			c.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
				asked.Store(true)
				if give != nil {
					return give(cri)
				}
				return &tls.Certificate{}, nil // none: the handshake goes on, etcd refuses it
			}
			creds[i] = credentials.NewTLS(c)
		default:
			return nil
		}
		hosts[i] = u.Host
	}
	errs := make([]error, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() {
			conn, err := grpc.NewClient("passthrough:///"+hosts[i], grpc.WithTransportCredentials(creds[i]))
			if err != nil {
				errs[i] = err
				return
			}
			defer conn.Close()
			// Fail-fast (the default): the call fails once the
			// connection has, with the connection's error.
			_, err = etcdserverpb.NewMaintenanceClient(conn).Status(ctx, &etcdserverpb.StatusRequest{})
			if c := status.Code(err); c == codes.Unavailable || c == codes.DeadlineExceeded {
				errs[i] = fmt.Errorf("%s: %s", ep, status.Convert(err).Message())
			}
		})
	}
	wg.Wait()
	if slices.Contains(errs, nil) {
		return nil
	}
	all := errors.Join(errs...)
	msg := all.Error()
	switch {
	case strings.Contains(msg, "x509:"), strings.Contains(msg, "verify certificate"):
		ca := "the system's CAs"
		if *f.cacert != "" {
			ca = *f.cacert
		}
		return fmt.Errorf("etcd TLS: etcd's certificate failed verification with %s: "+
			"pass --etcd-cacert ($DELEGATIONS_ETCD_CACERT) the CA bundle that signed it, and name the endpoints as the certificate does: %w", ca, all)
	case asked.Load() && *f.cert == "":
		return fmt.Errorf("etcd TLS: etcd requires a client certificate, and none was given: "+
			"pass --etcd-cert and --etcd-key ($DELEGATIONS_ETCD_CERT, $DELEGATIONS_ETCD_KEY), a certificate signed by a CA etcd trusts and its key: %w", all)
	case asked.Load():
		return fmt.Errorf("etcd TLS: etcd refused the client certificate %s (it asked for one, then closed the connection): "+
			"--etcd-cert ($DELEGATIONS_ETCD_CERT) must be signed by a CA etcd trusts (its --trusted-ca-file), valid now, for client authentication: %w", *f.cert, all)
	case strings.Contains(msg, "tls:"), strings.Contains(msg, "preface"):
		return fmt.Errorf("etcd TLS: the TLS handshake with etcd failed: "+
			"an endpoint's scheme (https:// for TLS, http:// without) must match how etcd serves clients: %w", all)
	}
	return fmt.Errorf("connect to etcd: %w: no endpoint answered: %w (is etcd running and reachable? `etcdctl endpoint health --cluster` tells)",
		etcdlog.ErrUnavailable, all)
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

// DefaultLeaseTTL is --etcd-lease-ttl's default: how long a daemon may be
// silent before the others take its delegations over. Long enough that a
// restart (an upgrade, a crash and its supervisor) keeps them; short
// enough that a deadline is late by that much at most.
const DefaultLeaseTTL = 15 * time.Second

// DaemonIDFile, in the data directory, holds the id under which its
// daemon owns delegations on a shared log. It is made by the first
// `serve --etcd` and kept: a daemon restarted on the directory owns again
// what it owned (unless another daemon took it over meanwhile). It lives
// beside the replica rather than in it, so that a replica moved aside to
// be rebuilt keeps its owner, as the artifacts beside it are that owner's.
const DaemonIDFile = ".delegations.daemon"

// daemonIDPattern is what a daemon id may hold: it ends an etcd key and
// appears in logs.
var daemonIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// storedDaemonID returns the id kept in data directory dir by its
// daemon's first `serve --etcd`, for the commands that read a replica
// without its daemon; "" when there is none (a log of its own) or it is
// not an id (the daemon's start says what is wrong with it).
func storedDaemonID(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, DaemonIDFile))
	if id := strings.TrimSpace(string(b)); err == nil && daemonIDPattern.MatchString(id) {
		return id
	}
	return ""
}

// daemonID returns the id of the daemon of data directory dir, made (the
// host name and 8 random hex digits) and stored on its first call.
func daemonID(dir string) (string, error) {
	path := filepath.Join(dir, DaemonIDFile)
	for range 2 {
		b, err := os.ReadFile(path)
		if err == nil {
			id := strings.TrimSpace(string(b))
			if !daemonIDPattern.MatchString(id) {
				return "", fmt.Errorf("%s holds %q, not a daemon id (letters, digits, '.', '_', '-'; at most 100): "+
					"fix it, or remove it to give this data directory a new id (its delegations are then taken over as a gone daemon's)", path, b)
			}
			return id, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("daemon id: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("data directory: %w", err)
		}
		host, _ := os.Hostname()
		host = regexp.MustCompile(`[^A-Za-z0-9.-]+`).ReplaceAllString(host, "-")
		host = strings.Trim(host, ".-")
		if len(host) > 80 {
			host = host[:80]
		}
		if host == "" {
			host = "daemon"
		}
		var r [4]byte
		if _, err := rand.Read(r[:]); err != nil {
			return "", fmt.Errorf("daemon id: %w", err)
		}
		id := fmt.Sprintf("%s-%x", host, r)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue // made by a daemon starting beside this one: read it
		}
		if err != nil {
			return "", fmt.Errorf("daemon id: %w", err)
		}
		_, err = f.WriteString(id + "\n")
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return "", fmt.Errorf("daemon id: %w", err)
		}
		return id, nil
	}
	return "", fmt.Errorf("daemon id: %s appeared and vanished while it was being made; start the daemon again", path)
}

// presence is the daemon of data directory dir among the daemons that
// share the log (its lease), for api.Config.Peers, which starts it.
func (f *etcdFlags) presence(cli *clientv3.Client, dir string, logger *slog.Logger) (*etcdlog.Presence, error) {
	id, err := daemonID(dir)
	if err != nil {
		return nil, err
	}
	return etcdlog.NewPresence(cli, id, etcdlog.PresenceOptions{
		Prefix: *f.prefix, TTL: *f.leaseTTL, RequestTimeout: *f.reqTimeout, Logger: logger,
	})
}
