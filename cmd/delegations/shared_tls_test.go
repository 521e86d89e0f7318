package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/eventlog/etcdlog/etcdtest"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// testCA is a throwaway certificate authority whose certificate and keys
// live in a test's temporary directory.
type testCA struct {
	dir  string
	file string // its certificate, PEM: what --etcd-cacert takes
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// newTestCA makes a CA named name in dir, valid for an hour.
func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := certTemplate(t, name)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{dir: dir, file: filepath.Join(dir, name+".pem"), cert: cert, key: key}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue signs a certificate for name, usable as usage says (a server's
// for 127.0.0.1, or a client's), and returns the files of the
// certificate and of its key.
func (ca *testCA) issue(t *testing.T, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := certTemplate(t, name)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", pkcs8)
	return certFile, keyFile
}

func certTemplate(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(time.Hour),
	}
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// serveRefused runs `serve` in this process on a new data directory with
// args (and the environment as it is) and returns its error, which must
// come: a daemon that cannot use etcd must not start.
func serveRefused(t *testing.T, args ...string) error {
	t.Helper()
	data := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var stdout, stderr bytes.Buffer
	go func() {
		done <- run(ctx, append([]string{"--data", data, "serve", "--socket", filepath.Join(data, "s.sock")}, args...), strings.NewReader(""), &stdout, &stderr)
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("serve %s: exited without an error", strings.Join(args, " "))
		}
		return err
	case <-time.After(hangGuard):
		cancel()
		<-done
		t.Fatalf("serve %s: neither serving nor refused after %s (hang guard); stderr:\n%s", strings.Join(args, " "), hangGuard, stderr.String())
		return nil
	}
}

// TestSharedLogTLS runs daemons on an etcd that serves clients over TLS
// only and requires a client certificate its CA signed: with the CA, the
// certificate and its key, a delegation registered, completed and read
// through one daemon is read through another, and a log migrates to and
// from that etcd; without the client certificate, or with a CA that did
// not sign etcd's, the daemon refuses to start and says which file is
// wrong.
func TestSharedLogTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and daemons")
	}
	pki := t.TempDir()
	ca := newTestCA(t, pki, "ca")
	serverCert, serverKey := ca.issue(t, "server", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := ca.issue(t, "client", x509.ExtKeyUsageClientAuth)
	c := etcdtest.StartTLS(t, 1, transport.TLSInfo{
		CertFile: serverCert, KeyFile: serverKey, TrustedCAFile: ca.file, ClientCertAuth: true,
	})
	endpoints := strings.Join(c.Endpoints(), ",")
	if !strings.HasPrefix(endpoints, "https://127.0.0.1:") {
		t.Fatalf("etcd serves clients at %s, not over TLS on loopback", endpoints)
	}
	tlsArgs := []string{"--etcd-cacert", ca.file, "--etcd-cert", clientCert, "--etcd-key", clientKey}

	// With the CA, the certificate and its key: read-your-writes across
	// two daemons.
	dirs := []string{t.TempDir(), t.TempDir()}
	ds := []*daemon{sharedDaemon(t, c, dirs[0], tlsArgs...), sharedDaemon(t, c, dirs[1], tlsArgs...)}
	var reg, done fsm.Delegation
	ds[0].call("register", api.RegisterRequest{
		RootSessionID: "ses_root", ParentSessionID: "ses_parent", Agent: "explore", ProjectID: "0123456789abcdef",
		Prompt: "over TLS", TimeoutMs: int64(time.Hour / time.Millisecond),
	}, &reg)
	ds[0].call("complete", api.CompleteRequest{ID: reg.ID, Result: "the answer came over TLS"}, &done)
	if done.State != fsm.Complete {
		t.Fatalf("complete: %s", done.State)
	}
	var res projection.ReadResult
	ds[0].call("read", api.ReadRequest{RootSessionID: "ses_root", ID: reg.ID}, &res)
	if !strings.Contains(res.Text, "the answer came over TLS") {
		t.Fatalf("read through the daemon that completed it: %q", res.Text)
	}
	barrier(t, ds[1])
	var other projection.ReadResult
	ds[1].call("read", api.ReadRequest{RootSessionID: "ses_root", ID: reg.ID}, &other)
	if other.Delegation.State != fsm.Complete || !strings.Contains(other.Text, "the answer came over TLS") {
		t.Fatalf("read through the second daemon: %s, %q", other.Delegation.State, other.Text)
	}

	// migrate takes the same options, both ways.
	src := t.TempDir()
	id := strings.TrimSpace(mustCLI(t, src, "", registerArgs()...))
	mustCLI(t, src, "migrated over TLS", "complete", id)
	migrate := append([]string{"--etcd", endpoints, "--etcd-prefix", "/migrated/"}, tlsArgs...)
	if out := mustCLI(t, src, "", append([]string{"migrate", "--to", "etcd"}, migrate...)...); !strings.Contains(out, "Verified record by record") {
		t.Fatalf("migrate --to etcd printed:\n%s", out)
	}
	back := t.TempDir()
	mustCLI(t, back, "", append([]string{"migrate", "--from", "etcd"}, migrate...)...)
	if out := mustCLI(t, back, "", "read", "--root-session", "ses_root", id); !strings.Contains(out, "migrated over TLS") {
		t.Fatalf("read after migrating to etcd and back over TLS: %q", out)
	}

	// On a short bound: a daemon that cannot use etcd
	// says why, and what to pass.
	quick := []string{"--etcd", endpoints, "--etcd-dial-timeout", "2s", "--etcd-timeout", "2s"}
	err := serveRefused(t, append(quick, "--etcd-cacert", ca.file)...)
	for _, want := range []string{"client certificate", "--etcd-cert", "--etcd-key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("serve without a client certificate: %v\nwant it to say %q", err, want)
		}
	}
	t.Logf("without a client certificate: %v", err)
	// A client certificate that another CA signed.
	rogue := newTestCA(t, t.TempDir(), "rogue-ca")
	rogueCert, rogueKey := rogue.issue(t, "rogue-client", x509.ExtKeyUsageClientAuth)
	err = serveRefused(t, append(quick, "--etcd-cacert", ca.file, "--etcd-cert", rogueCert, "--etcd-key", rogueKey)...)
	for _, want := range []string{"client certificate", rogueCert, "signed by a CA etcd trusts"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("serve with a client certificate another CA signed: %v\nwant it to say %q", err, want)
		}
	}
	t.Logf("with a client certificate another CA signed: %v", err)
	// A CA that did not sign etcd's certificate, given as the
	// environment variables a bridge's detached daemon reads.
	t.Setenv("DELEGATIONS_ETCD_CACERT", rogue.file)
	t.Setenv("DELEGATIONS_ETCD_CERT", clientCert)
	t.Setenv("DELEGATIONS_ETCD_KEY", clientKey)
	err = serveRefused(t, quick...)
	for _, want := range []string{"certificate", "verify", "--etcd-cacert"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("serve with a CA that did not sign etcd's certificate: %v\nwant it to say %q", err, want)
		}
	}
	t.Logf("with a CA that did not sign etcd's certificate: %v", err)
}
