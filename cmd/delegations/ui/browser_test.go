package ui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/delegations/delegations/cmd/delegations/internal/hosttest"
)

// ChromiumInstall is the command that installs the browser the end-to-end
// test drives.
const ChromiumInstall = "apt-get update && apt-get install -y chromium"

// chromium returns the browser to drive, or skips the test (fails it when
// DELEGATIONS_BROWSER_TESTS=require, as CI sets).
func chromium(t *testing.T) string {
	for _, p := range []string{os.Getenv("DELEGATIONS_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	msg := "chromium is not installed; install it with `" + ChromiumInstall + "` (or set DELEGATIONS_CHROMIUM)"
	if os.Getenv("DELEGATIONS_BROWSER_TESTS") == "require" {
		t.Fatal(msg + "; DELEGATIONS_BROWSER_TESTS=require")
	}
	t.Skip(msg)
	return ""
}

// cli runs the delegations binary on a data directory.
type cli struct {
	t    *testing.T
	bin  string
	data string
}

func (c cli) run(args ...string) string {
	c.t.Helper()
	cmd := exec.Command(c.bin, append([]string{"--data", c.data}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("delegations %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return strings.TrimSpace(string(out))
}

// TestBrowser drives the status page in headless Chromium as a user would:
// the board shows a delegation the CLI registered, moves it live (no
// reload) as the CLI completes it, has it delivered and reads it, shows its
// page with the artifact and the timeline, shows why another result never
// arrived, and cancels a third through the confirmation. Screenshots go to
// the test's artifact directory (go test -artifacts keeps them).
func TestBrowser(t *testing.T) {
	exe := chromium(t)
	c := cli{t: t, bin: hosttest.Delegations(t), data: t.TempDir()}
	var st struct {
		URL string `json:"url"`
		PID int    `json:"pid"`
	}
	if err := json.Unmarshal([]byte(c.run("--json", "ui")), &st); err != nil || st.URL == "" {
		t.Fatalf("ui --json: %v %+v", err, st)
	}
	t.Cleanup(func() {
		// The daemon `ui` started (it runs in its own session).
		if p, err := os.FindProcess(st.PID); err == nil {
			p.Signal(syscall.SIGTERM)
		}
	})
	shots := t.ArtifactDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // root in CI containers
		chromedp.WindowSize(1400, 1000),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	tab, cancel := chromedp.NewContext(actx)
	defer cancel()
	// Start the browser now, on the tab's own context: a first Run on a
	// context with a deadline that expired while Chromium started would
	// leave it unallocated, and a later Run allocating again makes
	// chromedp close a channel twice (a panic that hides the cause).
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// A bound for a page that never shows what is waited for: the test
	// fails with the page's state instead of hanging.
	ctx, cancelWait := context.WithTimeout(tab, time.Minute)
	defer cancelWait()
	must := func(err error) {
		t.Helper()
		if err == nil {
			return
		}
		// What the page showed when it failed.
		dctx, cancel := context.WithTimeout(tab, 10*time.Second)
		defer cancel()
		where, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
		if b, err := chromedp.Run(dctx, chromedp.FullScreenshot(100)); err == nil {
			os.WriteFile(filepath.Join(shots, "failed.png"), b, 0o644)
		}
		t.Fatalf("%v; the page (failed.png):\n%s", err, where)
	}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			b, err := chromedp.FullScreenshot(100)(ctx, tg) // quality 100: PNG
			if err != nil {
				return chromedp.Void{}, err
			}
			return chromedp.Void{}, os.WriteFile(filepath.Join(shots, name+".png"), b, 0o644)
		}
	}
	// eval returns a string the page's script computes.
	eval := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	row := func(group, id string) string { return `#g-` + group + ` tr[data-id="` + id + `"]` }
	reg := func(prompt string) string {
		return c.run("register", "--root-session", "ses_root", "--parent-session", "ses_root",
			"--agent", "researcher", "--model", "anthropic/claude-haiku", "--project", "proj1", "--prompt", prompt)
	}

	id := reg("Find out why TestCache is flaky")
	c.run("start", "--session", "ses_child1", id)
	c.run("progress", "--message", "Read 3 of 5 files", id)

	must(chromedp.Do(ctx,
		chromedp.Navigate(st.URL),
		chromedp.WaitVisible(row("running", id)),
		// The stream is open once the page says live.
		chromedp.WaitVisible(`#live.on`),
		shot("1-board-running"),
	))
	eval(`window.notReloaded = "yes"`)

	// Completed from the CLI: it moves to the unread results by itself.
	c.run("complete", "--title", "TestCache races on the shared map", "--result",
		"## Cause\n\nTwo goroutines write **the cache map** without a lock.\n\n```\ngo test -race ./cache\n```\n<script>document.title='pwned'</script>", id)
	must(chromedp.Do(ctx,
		chromedp.WaitVisible(row("unread", id)),
		shot("2-board-unread"),
	))
	if marker := eval(`window.notReloaded`); marker != "yes" {
		t.Fatalf("the page reloaded to show the change")
	}

	// Delivered and read: it moves to recent.
	c.run("ack", "terminal:"+id)
	c.run("read", "--root-session", "ses_root", id)
	must(chromedp.Do(ctx,
		chromedp.WaitVisible(row("recent", id)),
	))
	if marker := eval(`window.notReloaded`); marker != "yes" {
		t.Fatalf("the page reloaded to show the change")
	}

	// Its page: the artifact rendered (and inert), the timeline with the read.
	must(chromedp.Do(ctx,
		chromedp.Click(row("recent", id)+` a`, chromedp.NodeVisible),
		chromedp.WaitVisible(`#artifact-body strong`),
		chromedp.WaitVisible(`#timeline tr[data-kind="read"]`),
		chromedp.WaitVisible(`#timeline tr[data-kind="notified"]`),
		shot("3-delegation"),
	))
	title, artifact := eval(`document.title`), text(`#artifact-body`)
	if strings.Contains(title, "pwned") || !strings.Contains(artifact, "<script>") || !strings.Contains(artifact, "go test -race ./cache") {
		t.Errorf("artifact rendered unsafely or incompletely (title %q):\n%s", title, artifact)
	}

	// A result that never arrived: its delivery failed; the page says why
	// and what to run.
	lost := reg("Summarise the design doc")
	c.run("complete", "--result", "The design in three lines.", lost)
	c.run("ack", "--failed", "parent session busy", "terminal:"+lost)
	must(chromedp.Do(ctx,
		chromedp.Navigate(strings.TrimSuffix(st.URL[:strings.Index(st.URL, "/?")], "/")+"/"),
		chromedp.WaitVisible(row("failed-delivery", lost)),
		chromedp.Click(row("failed-delivery", lost)+` a`, chromedp.NodeVisible),
		chromedp.WaitVisible(`.finding[data-code="not_notified"]`),
		chromedp.WaitVisible(`#timeline tr[data-kind="notification_failed"]`),
		shot("4-why-lost"),
	))
	why := text(`#findings`)
	if !strings.Contains(why, "parent session busy") || !strings.Contains(why, "delegations ack") {
		t.Errorf("findings do not say why or what to run:\n%s", why)
	}

	// Cancel a running one through the confirmation; its page updates live.
	victim := reg("A task to cancel")
	c.run("start", victim)
	must(chromedp.Do(ctx,
		chromedp.Navigate(st.URL[:strings.Index(st.URL, "/?")]+"/d/"+victim),
		chromedp.WaitVisible(`#status.s-running`),
		chromedp.Click(`#cancel`, chromedp.NodeVisible),
		chromedp.WaitVisible(`#confirm`),
		shot("5-confirm-cancel"),
		chromedp.Click(`#confirm`, chromedp.NodeVisible),
		chromedp.WaitVisible(`#status.s-cancelled`),
		chromedp.WaitVisible(`#timeline tr[data-kind="cancelled"]`),
	))
	if got := c.run("show", "--json", victim); !strings.Contains(got, `"status":"cancelled"`) {
		t.Errorf("after the page's cancel: %s", got)
	}
	t.Logf("screenshots in %s", shots)
}
