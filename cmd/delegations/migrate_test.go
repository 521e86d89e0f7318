package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/eventlog/etcdlog"
	"github.com/delegations/delegations/eventlog/etcdlog/etcdtest"
	"github.com/delegations/delegations/fixtures"
	"github.com/delegations/delegations/projection"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// migrateArgs are the arguments of `delegations migrate` against cluster c
// at prefix.
func migrateArgs(c *etcdtest.Cluster, dir, prefix string) []string {
	return []string{"migrate", "--" + dir, "etcd", "--etcd", strings.Join(c.Endpoints(), ","), "--etcd-prefix", prefix}
}

// migratedStore registers, completes and acknowledges a few delegations
// in a new data directory, without a daemon: one with a prompt over
// eventlog.InlineLen, one with a result of the 4 MiB limit, one cancelled.
// It returns the directory and the ids.
func migratedStore(t *testing.T) (string, []string) {
	t.Helper()
	data := t.TempDir()
	long := strings.Repeat("Look at every flaky test in the suite. ", 80) // 3,120 bytes
	big := strings.Repeat("0123456789abcdef", (4<<20)/16)
	reg := func(prompt string) string {
		args := registerArgs()
		args[len(args)-1] = prompt
		return strings.TrimSpace(mustCLI(t, data, "", args...))
	}
	ids := []string{reg(long), reg("write the summary"), reg("never mind"),
		strings.TrimSpace(mustCLI(t, data, "", append(registerArgs(), "--idempotency-key", "retry-me")...))}
	mustCLI(t, data, "", "start", "--session", "ses_a", ids[0])
	mustCLI(t, data, "", "progress", "--message", "half way", ids[0])
	mustCLI(t, data, big, "complete", ids[0])
	mustCLI(t, data, "", "start", "--session", "ses_b", ids[1])
	mustCLI(t, data, "The summary.\nIt is short.", "complete", ids[1])
	mustCLI(t, data, "", "cancel", ids[2])
	for _, id := range ids[:2] {
		mustCLI(t, data, "", "read", "--root-session", "ses_root", id)
	}
	var ns api.Notifications
	if err := json.Unmarshal([]byte(mustCLI(t, data, "", "--json", "notifications")), &ns); err != nil {
		t.Fatal(err)
	}
	for _, n := range ns.Notifications {
		mustCLI(t, data, "", "ack", n.ID)
	}
	return data, ids
}

// views is what the store shows of ids, as the CLI prints it (show --json
// and list --json), which reads change (they record the read).
func views(t *testing.T, data string, ids []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, id := range ids {
		out["show "+id] = mustCLI(t, data, "", "--json", "show", id)
	}
	out["list"] = mustCLI(t, data, "", "--json", "list", "--root-session", "ses_root")
	return out
}

// reads is what read prints of each of ids, the data directory's path
// (where the artifact is) taken out.
func reads(t *testing.T, data string, ids []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, id := range ids {
		out["read "+id] = strings.ReplaceAll(mustCLI(t, data, "", "read", "--root-session", "ses_root", id), data, "DIR")
	}
	return out
}

// ownerless takes the owner and the version out of views' JSON.
func ownerless(t *testing.T, views map[string]string) map[string]string {
	t.Helper()
	var strip func(v any) any
	strip = func(v any) any {
		switch v := v.(type) {
		case map[string]any:
			delete(v, "owner")
			delete(v, "version")
			for k, x := range v {
				v[k] = strip(x)
			}
		case []any:
			for i, x := range v {
				v[i] = strip(x)
			}
		}
		return v
	}
	out := map[string]string{}
	for k, s := range views {
		var v any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		b, _ := json.Marshal(strip(v))
		out[k] = string(b)
	}
	return out
}

func sameAnswers(t *testing.T, where string, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if g := got[k]; g != w {
			i := 0
			for i < min(len(g), len(w)) && g[i] == w[i] {
				i++
			}
			t.Fatalf("%s: %s differs at byte %d of %d/%d:\n got %.300q\nwant %.300q", where, k, i, len(g), len(w), g[max(0, i-100):], w[max(0, i-100):])
		}
	}
}

// TestMigrateToEtcdAndBack migrates a data directory's log to etcd, serves
// it with a daemon started with --etcd on a new data directory, which
// answers as the old one did (texts over 2,000 bytes and of 4 MiB
// included), writes through it, then migrates the etcd log into another
// new data directory, opened as a plain store, which answers the same.
func TestMigrateToEtcdAndBack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and a daemon")
	}
	c := etcdtest.Start(t, 1)
	data, ids := migratedStore(t)
	texts := reads(t, data, ids)
	before := views(t, data, ids)

	out := mustCLI(t, data, "", migrateArgs(c, "to", "/m/")...)
	t.Logf("migrate --to etcd:\n%s", out)
	if !strings.Contains(out, "Verified record by record") || !strings.Contains(out, "2 payloads over 2000 bytes") || !strings.Contains(out, "1 idempotency keys") {
		t.Fatalf("migrate --to etcd printed:\n%s", out)
	}
	again := cli(t, data, "", migrateArgs(c, "to", "/m/")...)
	if again.code != 1 || !strings.Contains(again.stderr, "was migrated to etcd") {
		t.Fatalf("a second migration of the log: exit %d, stderr %s", again.code, again.stderr)
	}

	served := t.TempDir()
	d := startDaemon(t, served, "--etcd", strings.Join(c.Endpoints(), ","), "--etcd-prefix", "/m/")
	// A daemon that owns delegations takes the open ones over (they have
	// no owner in a log from one machine): one more event, an owner.
	sameAnswers(t, "daemon on etcd", ownerless(t, views(t, served, ids)), ownerless(t, before))
	sameAnswers(t, "daemon on etcd", reads(t, served, ids), texts)
	if got, err := os.ReadFile(filepath.Join(served, showField(t, served, ids[0], "artifactPath"))); err != nil || !strings.Contains(string(got), strings.Repeat("0123456789abcdef", 1000)) {
		t.Fatalf("the daemon on etcd wrote the artifact from the record: %v, %d bytes", err, len(got))
	}
	// The migrated log goes on: a retried registration finds its first
	// result, a new delegation, and a command on an old one.
	if again := strings.TrimSpace(mustCLI(t, served, "", append(registerArgs(), "--idempotency-key", "retry-me")...)); again != ids[3] {
		t.Fatalf("a registration retried with its key after the migration: %s, want %s", again, ids[3])
	}
	ids = append(ids, strings.TrimSpace(mustCLI(t, served, "", registerArgs()...)))
	refused := cli(t, served, "", "progress", "--message", "late", ids[0])
	if refused.code != 1 || !strings.Contains(refused.stderr, "already complete") {
		t.Fatalf("progress on a migrated complete delegation: exit %d, %s", refused.code, refused.stderr)
	}
	if code := d.stop(os.Interrupt); code != 0 {
		t.Fatalf("daemon exited %d", code)
	}
	after := views(t, served, ids) // read-only, from the stopped daemon's replica

	back := t.TempDir()
	out = mustCLI(t, back, "", migrateArgs(c, "from", "/m/")...)
	t.Logf("migrate --from etcd:\n%s", out)
	if !strings.Contains(out, "Views built") {
		t.Fatalf("migrate --from etcd printed:\n%s", out)
	}
	sameAnswers(t, "plain store migrated back", views(t, back, ids), after)
	sameAnswers(t, "plain store migrated back", reads(t, back, ids[:4]), texts)
	mustCLI(t, back, "", "verify")
	into := cli(t, back, "", migrateArgs(c, "from", "/m/")...)
	if into.code != 1 || !strings.Contains(into.stderr, "already holds a log") {
		t.Fatalf("migrate --from etcd into a directory with a log: exit %d, %s", into.code, into.stderr)
	}
}

func showField(t *testing.T, data, id, field string) string {
	t.Helper()
	var rec map[string]any
	if err := json.Unmarshal([]byte(mustCLI(t, data, "", "--json", "show", id)), &rec); err != nil {
		t.Fatal(err)
	}
	s, _ := rec[field].(string)
	if s == "" {
		t.Fatalf("show %s has no %s: %v", id, field, rec)
	}
	return s
}

// TestMigrateResumes interrupts a migration each way after some records
// and runs it again: it goes on where the first stopped, and the result
// is the whole log, verified. In between, the half-copied etcd prefix is
// refused by Open (its head is the import's marker), and the half-copied
// bbolt log is not in place.
func TestMigrateResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	c := etcdtest.Start(t, 1)
	data, ids := migratedStore(t)
	for range 5 {
		ids = append(ids, strings.TrimSpace(mustCLI(t, data, "", registerArgs()...)))
	}
	before := views(t, data, ids)
	ctx := context.Background()
	cl := etcdClient(t, c)
	opts := etcdlog.Options{Prefix: "/r/"}

	m := &migration{cli: cl, opts: opts, stopAfter: 9, batch: 4}
	abs, _ := filepath.Abs(data)
	if err := m.toEtcd(ctx, abs, &migrateReport{}); !errors.Is(err, errInterrupted) {
		t.Fatalf("interrupted migration: %v", err)
	}
	if _, err := etcdlog.Open(ctx, cl, opts); err == nil || !strings.Contains(err.Error(), "NOT READY: delegations migrate has copied 12 of") {
		t.Fatalf("Open on a half-migrated prefix: %v", err)
	}
	out := mustCLI(t, data, "", migrateArgs(c, "to", "/r/")...)
	if !strings.Contains(out, "Resumed an interrupted migration after record 12") {
		t.Fatalf("the second run:\n%s", out)
	}
	checkSameRecords(t, filepath.Join(data, projection.LogFile), cl, opts)

	back := t.TempDir()
	m = &migration{cli: cl, opts: opts, stopAfter: 5, batch: 5}
	if err := m.fromEtcd(ctx, back, &migrateReport{}); !errors.Is(err, errInterrupted) {
		t.Fatalf("interrupted migration back: %v", err)
	}
	if _, err := os.Stat(filepath.Join(back, projection.LogFile)); !os.IsNotExist(err) {
		t.Fatalf("a half-copied log is in place: %v", err)
	}
	out = mustCLI(t, back, "", migrateArgs(c, "from", "/r/")...)
	if !strings.Contains(out, "Resumed an interrupted migration after record 5") {
		t.Fatalf("the second run back:\n%s", out)
	}
	sameAnswers(t, "migrated there and back", views(t, back, ids), before)
}

// checkSameRecords compares the bbolt log at path with the etcd log,
// independently of migrate's own verification.
func checkSameRecords(t *testing.T, path string, cl *clientv3.Client, opts etcdlog.Options) {
	t.Helper()
	src, err := eventlog.Open(path, eventlog.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := etcdlog.Open(context.Background(), cl, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	var n uint64
	for a, err := range src.Records(1) {
		if err != nil {
			t.Fatal(err)
		}
		for b, err := range dst.Records(a.Seq) {
			if err != nil {
				t.Fatal(err)
			}
			if d := recordDiff(a, b); d != "" {
				t.Fatalf("record %d: %s", a.Seq, d)
			}
			break
		}
		streamA, _ := src.Stream(a.Stream)
		streamB, err := dst.Stream(a.Stream)
		if err != nil || len(streamA) != len(streamB) {
			t.Fatalf("stream %q: %d records in bbolt, %d on etcd (%v)", a.Stream, len(streamA), len(streamB), err)
		}
		n++
	}
	if n == 0 || dst.Last() != n {
		t.Fatalf("%d records in bbolt, etcd's head is %d", n, dst.Last())
	}
}

func etcdClient(t *testing.T, c *etcdtest.Cluster) *clientv3.Client {
	t.Helper()
	cl, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// TestMigrateRefuses: a damaged log, a running daemon, a missing --etcd,
// and nothing is written to etcd for any of them.
func TestMigrateRefuses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	c := etcdtest.Start(t, 1)
	cl := etcdClient(t, c)

	for _, dmg := range fixtures.Damages() {
		damaged, _ := damagedStore(t)
		if err := dmg.Apply(filepath.Join(damaged, projection.LogFile)); err != nil {
			t.Fatal(err)
		}
		r := runBin(t, "", append([]string{"--data", damaged}, migrateArgs(c, "to", "/d/")...)...)
		if crashed(r) || r.code != 1 || !strings.Contains(r.stderr, "recover") {
			t.Fatalf("migrate of a log with %s: exit %d, %s", dmg.Name, r.code, r.stderr)
		}
		if dmg.Records && (!strings.Contains(r.stderr, "fails verification, so nothing was copied") || !strings.Contains(r.stderr, "record ")) {
			t.Fatalf("migrate of a log with %s names no record: %s", dmg.Name, r.stderr)
		}
	}

	data, _ := migratedStore(t)
	startDaemon(t, data)
	r := cli(t, data, "", migrateArgs(c, "to", "/d/")...)
	if r.code != 1 || !strings.Contains(r.stderr, "stop it first") {
		t.Fatalf("migrate beside a daemon: exit %d, %s", r.code, r.stderr)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "--etcd", "http://127.0.0.1:1"}, "give --to etcd"},
		{[]string{"migrate", "--to", "etcd", "--from", "etcd", "--etcd", "http://127.0.0.1:1"}, "give --to etcd"},
		{[]string{"migrate", "--to", "bbolt", "--etcd", "http://127.0.0.1:1"}, "--to and --from take etcd"},
		{[]string{"migrate", "--to", "etcd"}, "--etcd URLS"},
	} {
		r := cli(t, t.TempDir(), "", tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Fatalf("%v: exit %d, %s", tc.args, r.code, r.stderr)
		}
	}
	resp, err := cl.Get(context.Background(), "/d/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("etcd holds %d keys under /d/ after refused migrations (%v)", resp.Count, err)
	}
}

// TestMigrateSeals: after migrate --to etcd the old data directory's log
// is sealed: commands that write refuse it, saying where the log went and
// what to do, while those that read (show, list, events, verify, replay,
// timeline) still work; migrating it again is refused, but for the run that sealed
// it, which goes on if it stopped before marking the copy ready. migrate
// --from etcd brings the log back into that directory, keeping the sealed
// file beside it, and only from the etcd log it went to.
func TestMigrateSeals(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	c := etcdtest.Start(t, 1)
	cl := etcdClient(t, c)
	ctx := context.Background()
	data, ids := migratedStore(t)
	before := views(t, data, ids)
	abs, _ := filepath.Abs(data)
	path := filepath.Join(abs, projection.LogFile)
	src, err := eventlog.Open(path, eventlog.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	total := src.Last()
	src.Close()

	// Stopped after the seal, before the copy is marked ready (a crash
	// between the two): every record copied, the log sealed for it.
	m := &migration{cli: cl, opts: etcdlog.Options{Prefix: "/s/"}, stopAfter: total}
	if err := m.toEtcd(ctx, abs, &migrateReport{}); !errors.Is(err, errInterrupted) {
		t.Fatalf("interrupted migration: %v", err)
	}
	resp, err := cl.Get(ctx, "/s/id")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the import's id: %v, %v", resp, err)
	}
	at := time.Now().UTC().Truncate(time.Second)
	if err := eventlog.Seal(path, eventlog.Migrated{To: "etcd " + m.etcd(), Log: "etcd log " + string(resp.Kvs[0].Value) + " at prefix /s/", Records: total, At: at}, eventlog.Options{}); err != nil {
		t.Fatal(err)
	}
	out := mustCLI(t, data, "", migrateArgs(c, "to", "/s/")...)
	if !strings.Contains(out, "Resumed an interrupted migration after record") || !strings.Contains(out, "marked migrated") {
		t.Fatalf("the migration run again over its seal:\n%s", out)
	}
	checkSameRecords(t, path, cl, etcdlog.Options{Prefix: "/s/"})

	// Writers refuse the sealed log, saying where it went and what to do.
	for _, args := range [][]string{registerArgs(), {"cancel", ids[3]}} {
		r := cli(t, data, "", args...)
		if r.code != 1 || !strings.Contains(r.stderr, "was migrated to etcd "+strings.Join(c.Endpoints(), ",")+" prefix /s/ at "+at.Format(time.RFC3339)) ||
			!strings.Contains(r.stderr, "--etcd") || !strings.Contains(r.stderr, "migrate --from etcd") {
			t.Fatalf("%s on the sealed log: exit %d, %s", args[0], r.code, r.stderr)
		}
		t.Logf("%s on the sealed log: %s", args[0], r.stderr)
	}
	// Readers read it.
	sameAnswers(t, "the sealed log", views(t, data, ids), before)
	for _, args := range [][]string{{"events"}, {"verify"}, {"replay"}, {"timeline", ids[0]}} {
		mustCLI(t, data, "", args...)
	}
	// Migrating it again is refused, into the same prefix or another, and
	// writes nothing.
	for _, prefix := range []string{"/s/", "/t/"} {
		r := cli(t, data, "", migrateArgs(c, "to", prefix)...)
		if r.code != 1 || !strings.Contains(r.stderr, "was migrated to etcd") {
			t.Fatalf("migrate --to etcd %s of the sealed log: exit %d, %s", prefix, r.code, r.stderr)
		}
	}
	if resp, err := cl.Get(ctx, "/t/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Fatalf("etcd holds %d keys under /t/ after a refused migration (%v)", resp.Count, err)
	}

	// Another log, sealed for another prefix, is not brought back from /s/.
	other, _ := migratedStore(t)
	mustCLI(t, other, "", migrateArgs(c, "to", "/u/")...)
	r := cli(t, other, "", migrateArgs(c, "from", "/s/")...)
	if r.code != 1 || !strings.Contains(r.stderr, "not to this one") {
		t.Fatalf("migrate --from etcd of another log over a sealed one: exit %d, %s", r.code, r.stderr)
	}

	// The log goes on in etcd, then comes back into its old directory,
	// whose sealed log is kept beside it.
	served := t.TempDir()
	d := startDaemon(t, served, "--etcd", strings.Join(c.Endpoints(), ","), "--etcd-prefix", "/s/")
	ids = append(ids, strings.TrimSpace(mustCLI(t, served, "", registerArgs()...)))
	if code := d.stop(os.Interrupt); code != 0 {
		t.Fatalf("daemon exited %d", code)
	}
	after := views(t, served, ids)
	// A run stopped between keeping the sealed log and putting the copy
	// in its place left the link: the next run goes on.
	kept := path + ".migrated-" + at.Format("20060102T150405Z")
	if err := os.Link(path, kept); err != nil {
		t.Fatal(err)
	}
	out = mustCLI(t, data, "", migrateArgs(c, "from", "/s/")...)
	if !strings.Contains(out, "kept as "+kept) {
		t.Fatalf("migrate --from etcd into the sealed directory printed:\n%s", out)
	}
	sameAnswers(t, "migrated back over the sealed log", views(t, data, ids), after)
	mustCLI(t, data, "", registerArgs()...) // writable again
	old, err := eventlog.Open(kept, eventlog.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if old.Last() != total {
		t.Fatalf("the kept sealed log holds %d records, want %d", old.Last(), total)
	}
}
