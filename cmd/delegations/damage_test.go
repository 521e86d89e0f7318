package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fixtures"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// Damaged log files under every command: no crash, a typed error naming
// the damage (exit 1), and no record that passed its checksum before a
// command is gone after it.

var (
	damagedOnce sync.Once
	damagedDir  string
	damagedIDs  []string
	damagedErr  error
)

// damageSeed seeds the ids of the store damagedStore builds. With it, the
// leaf element table case loses records 20-38 of 500, a leaf that ends
// between a delegation's started and completed events: its completed and
// persisted events survive without its registration. (The CI failure was a
// leaf of records 20-37, ending after a registered event; the record sizes
// of no seed tried give that, TestRecoverLostRegistration makes it.)
const damageSeed = 5

// damagedStore builds, once, a data directory (TestMain removes it) with enough delegations for
// the events bucket to have branch pages, and returns a fresh copy of it.
func damagedStore(t *testing.T) (dir string, ids []string) {
	t.Helper()
	damagedOnce.Do(func() {
		damagedDir, damagedIDs, damagedErr = buildDamagedStore(damageSeed)
	})
	if damagedErr != nil {
		t.Fatal(damagedErr)
	}
	dir = t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(damagedDir)); err != nil {
		t.Fatal(err)
	}
	return dir, damagedIDs
}

// buildDamagedStore writes the store damagedStore copies into a new
// directory. Its ids are drawn from seed and its clock steps from a fixed
// time: the records' sizes (ids, and artifact hashes, which depend on the
// times) decide which records share a leaf page, hence which records each
// damage case destroys. With crypto/rand ids and time.Now that changed from
// run to run, and the leaf element table case only sometimes cut a
// delegation between its registered and started events (the page numbers
// still vary: bbolt spills buckets in map order). The clock starts in 2100
// so that no delegation is overdue for the commands later run on the real
// clock; nothing here waits on the store's timers.
func buildDamagedStore(seed byte) (dir string, ids []string, err error) {
	if dir, err = os.MkdirTemp("", "delegations-damage-"); err != nil {
		return "", nil, err
	}
	var mu sync.Mutex
	now := time.Date(2100, 1, 2, 3, 4, 5, 0, time.UTC)
	s, err := projection.Open(dir, projection.Options{
		IDs: fsm.NewIDGenerator(rand.NewChaCha8([32]byte{'d', 'a', 'm', 'a', 'g', 'e', seed})),
		Now: func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			now = now.Add(1234567 * time.Nanosecond)
			return now
		},
	})
	if err != nil {
		return dir, nil, err
	}
	defer func() {
		if cerr := s.Close(); err == nil {
			err = cerr
		}
	}()
	ctx := context.Background()
	for i := range 150 {
		d, err := s.Register(ctx, projection.Registration{
			ProjectID: "0123456789abcdef", RootSessionID: "ses_root", ParentSessionID: "ses_root",
			Agent: "researcher", Prompt: fmt.Sprintf("Task %d: %s", i, strings.Repeat("look closely ", 8)),
		})
		if err == nil {
			_, err = s.Start(ctx, d.ID, fmt.Sprint("ses_child", i))
		}
		if err == nil && i%3 != 0 {
			_, err = s.Complete(ctx, d.ID, fmt.Sprintf("Result %d: %s", i, strings.Repeat("found it ", 10)), "", "")
		}
		if err != nil {
			return dir, nil, err
		}
		ids = append(ids, d.ID)
	}
	return dir, ids, nil
}

// intactRecords returns the sequence numbers of the records that pass their
// checksum, read without trusting bbolt.
func intactRecords(t *testing.T, path string) map[uint64]string {
	t.Helper()
	out := map[uint64]string{}
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		return out
	}
	s, err := eventlog.Salvage(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range s.Records {
		out[r.Seq] = string(r.Payload)
	}
	return out
}

// crashed reports whether a run ended in a panic or a fault.
func crashed(r cliRun) bool {
	return r.code == 2 && (strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ")) ||
		strings.Contains(r.stderr, "SIGSEGV") || strings.Contains(r.stderr, "SIGBUS") || strings.Contains(r.stderr, "fatal error")
}

// serveAttempt starts the daemon; if it comes up it is stopped at once.
func serveAttempt(t *testing.T, data string) (served bool, r cliRun) {
	t.Helper()
	cmd := exec.Command(binary(t), "--data", data, "serve")
	cmd.Env = childEnv()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "msg=serving ") {
			served = true
			cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	io.Copy(io.Discard, stderr)
	err = cmd.Wait()
	r.stderr = log.String()
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() != syscall.SIGTERM {
			r.stderr += "killed by " + ws.Signal().String()
		}
	}
	return served, r
}

func TestDamagedLogCommands(t *testing.T) {
	for _, dmg := range fixtures.Damages() {
		t.Run(dmg.Name, func(t *testing.T) {
			t.Parallel()
			data, ids := damagedStore(t)
			path := filepath.Join(data, projection.LogFile)
			if err := dmg.Apply(path); err != nil {
				t.Fatal(err)
			}
			before := intactRecords(t, path)
			// Readers check only what bbolt trusts at open, so one that
			// never reads the damaged page may succeed; when it fails, it
			// names the damage. A writer checks every page and refuses.
			check := func(what string, r cliRun, writes bool) {
				t.Helper()
				if crashed(r) || (r.code != 0 && r.code != 1) {
					t.Fatalf("%s crashed or exited %d:\n%s", what, r.code, r.stderr)
				}
				if !dmg.Records && (writes || r.code != 0 && r.stderr != "") {
					if r.code != 1 || !(strings.Contains(r.stderr, "damaged") || strings.Contains(r.stderr, "empty")) || !strings.Contains(r.stderr, "delegations recover") {
						t.Errorf("%s: exit %d, want 1 with a message naming the damage and `delegations recover`:\n%s", what, r.code, r.stderr)
					}
				}
				now := intactRecords(t, path)
				for seq := range before {
					if _, ok := now[seq]; !ok {
						t.Fatalf("after %s, record %d (intact before) is gone", what, seq)
					}
				}
			}
			for _, args := range [][]string{
				{"show", ids[7]},
				{"list", "--root-session", "ses_root"},
				{"events"},
				{"replay"},
				{"verify"},
				{"timeline", ids[7]},
				{"register", "--root-session", "ses_root", "--parent-session", "ses_root", "--agent", "a", "--project", "0123456789abcdef", "--prompt", "p"},
			} {
				check(args[0], runBin(t, "", append([]string{"--data", data}, args...)...), args[0] == "register")
			}
			served, r := serveAttempt(t, data)
			if served && !dmg.Records {
				t.Errorf("the daemon served a damaged log:\n%s", r.stderr)
			}
			check("serve", r, !dmg.Records)
		})
	}
}

// TestRecover: recover copies every intact record into a new log, keeps
// the damaged file, and reports exactly what was lost; afterwards every
// command works.
func TestRecover(t *testing.T) {
	for _, dmg := range fixtures.Damages() {
		t.Run(dmg.Name, func(t *testing.T) {
			t.Parallel()
			data, _ := damagedStore(t)
			path := filepath.Join(data, projection.LogFile)
			total := len(intactRecords(t, path))
			if err := dmg.Apply(path); err != nil {
				t.Fatal(err)
			}
			before := intactRecords(t, path)
			r := runBin(t, "", "--data", data, "--json", "recover")
			if crashed(r) || (r.code != 0 && r.code != 1) {
				t.Fatalf("recover: exit %d\n%s", r.code, r.stderr)
			}
			var rep recoverReport
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
				t.Fatalf("recover --json: %v\n%s\n%s", err, r.stdout, r.stderr)
			}
			kept, _ := filepath.Glob(path + ".damaged-*")
			if len(kept) != 1 {
				t.Fatalf("the damaged file is not kept beside the log: %v", kept)
			}
			if dmg.Name == "zero length" {
				if !rep.Empty || rep.Artifacts == 0 || r.code != 1 {
					t.Fatalf("zero-length log: report %+v exit %d, want it empty with artifacts", rep, r.code)
				}
				txt := runBin(t, "", "--data", data, "recover")
				if !strings.Contains(txt.stderr+txt.stdout, "no log") {
					t.Errorf("a second recover: %s%s", txt.stdout, txt.stderr)
				}
				imp := runBin(t, "", "--data", data, "import", data)
				if imp.code != 0 || !strings.Contains(imp.stdout, "imported") {
					t.Fatalf("import after recovering an empty log: exit %d\n%s%s", imp.code, imp.stdout, imp.stderr)
				}
				return
			}
			// Exactly the intact records, in order, contiguous (a rebuild
			// may append after them: an artifact whose persisted event was
			// lost is persisted again).
			if rep.Salvaged != len(before) {
				t.Fatalf("the report says %d records salvaged, %d were intact", rep.Salvaged, len(before))
			}
			l, err := eventlog.Open(path, eventlog.Options{ReadOnly: true})
			if err != nil {
				t.Fatalf("open the recovered log: %v", err)
			}
			var got []eventlog.Record
			for r, err := range l.Records(1) {
				if err != nil {
					t.Fatalf("the recovered log: %v", err)
				}
				got = append(got, r)
			}
			l.Close()
			var seqs []uint64
			for seq := range before {
				seqs = append(seqs, seq)
			}
			slices.Sort(seqs)
			if len(got) < len(seqs) {
				t.Fatalf("the recovered log holds %d records, %d were intact", len(got), len(seqs))
			}
			for i, seq := range seqs {
				if string(got[i].Payload) != before[seq] || got[i].Seq != uint64(i+1) {
					t.Fatalf("record %d of the recovered log is not old record %d", i+1, seq)
				}
			}
			var lost []uint64
			for seq := uint64(1); seq <= rep.LastSeq; seq++ {
				if _, ok := before[seq]; !ok {
					lost = append(lost, seq)
				}
			}
			if fmt.Sprint(lost) != fmt.Sprint(rep.Lost) && !(len(lost) == 0 && len(rep.Lost) == 0) {
				t.Fatalf("report says lost %v, want %v", rep.Lost, lost)
			}
			if len(rep.Lost) == 0 && rep.Salvaged != total && !strings.HasPrefix(dmg.Name, "truncated") {
				t.Errorf("salvaged %d of %d records and reports no loss", rep.Salvaged, total)
			}
			if (len(rep.Lost) > 0 || rep.Salvaged == 0) != (r.code == 1) && rep.RebuildErr == "" {
				t.Errorf("recover exit %d with %d lost of %d", r.code, len(rep.Lost), rep.Salvaged)
			}
			if v := runBin(t, "", "--data", data, "verify"); crashed(v) || strings.Contains(v.stderr, "damaged") {
				t.Errorf("verify after recover: exit %d\n%s%s", v.code, v.stdout, v.stderr)
			}
			if sh := runBin(t, "", "--data", data, "register", "--root-session", "ses_root", "--parent-session", "ses_root", "--agent", "a", "--project", "0123456789abcdef", "--prompt", "after"); sh.code != 0 {
				t.Errorf("register after recover: exit %d\n%s", sh.code, sh.stderr)
			}
		})
	}
}

// TestInspectionReadOnly: the inspection verbs open the log read-only:
// they run while another reader holds the file's shared lock (a writer
// could not), and leave the file as it was, byte for byte.
func TestInspectionReadOnly(t *testing.T) {
	data, ids := damagedStore(t)
	path := filepath.Join(data, projection.LogFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	reader, err := eventlog.Open(path, eventlog.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	backup := filepath.Join(t.TempDir(), "copy.db")
	for _, args := range [][]string{
		{"show", ids[3]},
		{"list", "--root-session", "ses_root"},
		{"active"},
		{"compact", "--root-session", "ses_root"},
		{"notifications"},
		{"events"},
		{"replay"},
		{"verify"},
		{"timeline", ids[3]},
		{"backup", backup},
	} {
		r := runBin(t, "", append([]string{"--data", data}, args...)...)
		if r.code != 0 && !(r.code == 1 && (args[0] == "replay" || args[0] == "verify") && !strings.Contains(r.stderr, "lock")) {
			t.Errorf("%s beside a reader: exit %d\n%s", args[0], r.code, r.stderr)
		}
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi2, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != string(after) || !fi.ModTime().Equal(fi2.ModTime()) {
		t.Error("an inspection verb changed the log file")
	}
	if r := runBin(t, "", "--data", data, "backup", backup); r.code != 1 || !strings.Contains(r.stderr, "exists") {
		t.Errorf("a second backup to the same file: exit %d\n%s", r.code, r.stderr)
	}
	copyDir := t.TempDir()
	if err := os.Rename(backup, filepath.Join(copyDir, projection.LogFile)); err != nil {
		t.Fatal(err)
	}
	if r := runBin(t, "", "--data", copyDir, "events"); r.code != 0 || strings.Count(r.stdout, "\n") != len(intactRecords(t, path)) {
		t.Errorf("the backup: exit %d, %d events, want %d\n%s", r.code, strings.Count(r.stdout, "\n"), len(intactRecords(t, path)), r.stderr)
	}
}

// TestInspectionReadOnlyDirectory: in a data directory nobody may write
// to, the inspection verbs work (needs a non-root user: root ignores
// permissions; TestInspectionReadOnly covers the same ground as root).
func TestInspectionReadOnlyDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores permissions")
	}
	data, ids := damagedStore(t)
	if err := os.Chmod(filepath.Join(data, projection.LogFile), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(data, 0o700) })
	for _, args := range [][]string{{"show", ids[3]}, {"events"}, {"list", "--root-session", "ses_root"}, {"timeline", ids[3]}} {
		if r := runBin(t, "", append([]string{"--data", data}, args...)...); r.code != 0 {
			t.Errorf("%s in a read-only data directory: exit %d\n%s", args[0], r.code, r.stderr)
		}
	}
}

// TestBackupThroughDaemon: with a daemon serving, backup asks it for a
// consistent copy; the copy opens as a log with every record; an existing
// file is never overwritten; a relative path is the caller's, made
// absolute before it reaches the daemon.
func TestBackupThroughDaemon(t *testing.T) {
	data, _ := damagedStore(t)
	d := startDaemon(t, data)
	last := d.lastSeq()
	out := t.TempDir()
	r := runBin(t, "", "--data", data, "--json", "backup", filepath.Join(out, "copy.db"))
	if r.code != 0 {
		t.Fatalf("backup: exit %d\n%s", r.code, r.stderr)
	}
	var res api.BackupResponse
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.LastSeq < last || res.Bytes == 0 {
		t.Fatalf("backup answer %s (%v), want lastSeq >= %d", r.stdout, err, last)
	}
	again := runBin(t, "", "--data", data, "backup", filepath.Join(out, "copy.db"))
	if again.code != 1 || !strings.Contains(again.stderr, "exists") {
		t.Fatalf("backup over an existing file: exit %d\n%s", again.code, again.stderr)
	}
	var e struct{ Error api.Error }
	status, _, body := d.do("POST", "/v1/backup", []byte(`{"path":"relative.db"}`))
	if err := json.Unmarshal(body, &e); err != nil || status != 400 || e.Error.Code != "invalid" {
		t.Fatalf("relative path: %d %s", status, body)
	}
	d.stop(syscall.SIGTERM)
	l, err := eventlog.Open(filepath.Join(out, "copy.db"), eventlog.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	n := uint64(0)
	for rec, err := range l.Records(1) {
		if err != nil {
			t.Fatal(err)
		}
		n = rec.Seq
	}
	if n != res.LastSeq && n < last {
		t.Fatalf("the copy holds records up to %d, want %d", n, res.LastSeq)
	}
}

// TestRecoverLostRegistration: damage that takes a delegation's
// registration but leaves its later events intact (a lost leaf page that
// ends between a delegation's registered and started events does this;
// here its registered record fails its checksum). Recover keeps every
// intact record, and the store opens afterwards: the views must not
// choke on the events of a delegation they never saw registered (they
// once did, with bbolt's bare "key required" for its parent's cycle).
func TestRecoverLostRegistration(t *testing.T) {
	data, ids := damagedStore(t)
	path := filepath.Join(data, projection.LogFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Every copy of delegation 1's registered record (freed pages may keep
	// old ones) and of its view record: the prompt is in both.
	needle := []byte("Task 1: look closely")
	n := 0
	for i := 0; ; {
		j := bytes.Index(raw[i:], needle)
		if j < 0 {
			break
		}
		raw[i+j+len(needle)-1] ^= 0x20
		i += j + len(needle)
		n++
	}
	if n == 0 {
		t.Fatal("delegation 1's prompt is not in the log file")
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	before := intactRecords(t, path)
	r := runBin(t, "", "--data", data, "--json", "recover")
	var rep recoverReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("recover --json: exit %d: %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	if len(rep.Lost) != 1 || rep.Salvaged != len(before) || rep.RebuildErr != "" || r.code != 1 {
		t.Fatalf("recover: exit %d, lost %v, salvaged %d of %d intact, rebuild error %q, want one record lost and the views rebuilt",
			r.code, rep.Lost, rep.Salvaged, len(before), rep.RebuildErr)
	}
	if sh := runBin(t, "", "--data", data, "register", "--root-session", "ses_root", "--parent-session", "ses_root", "--agent", "a", "--project", "0123456789abcdef", "--prompt", "after"); sh.code != 0 {
		t.Fatalf("register after recover: exit %d\n%s", sh.code, sh.stderr)
	}
	// Replay's rules for the views agree with the projector's.
	if v := runBin(t, "", "--data", data, "verify"); v.code != 0 {
		t.Errorf("verify after recover: exit %d\n%s%s", v.code, v.stdout, v.stderr)
	}
	for _, args := range [][]string{{"show", ids[1]}, {"show", ids[2]}, {"list", "--root-session", "ses_root"}} {
		if sh := runBin(t, "", append([]string{"--data", data}, args...)...); sh.code != 0 {
			t.Errorf("%s after recover: exit %d\n%s", args[0], sh.code, sh.stderr)
		}
	}
}
