package hosttest_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/delegations/delegations/cmd/delegations/internal/hosttest"
)

func TestMain(m *testing.M) {
	code := hosttest.RunOffline(m)
	hosttest.Cleanup()
	os.Exit(code)
}

// TestOffline shows whether this run is offline-proven. It fails only when
// the re-exec into a network namespace happened and still sees another
// interface: then the proof itself is broken.
func TestOffline(t *testing.T) {
	if hosttest.Offline() {
		t.Log("offline-proven: the only network interface is lo")
		return
	}
	if os.Getenv("DELEGATIONS_HOSTTEST_NETNS") == "1" {
		t.Fatalf("re-executed in a network namespace but not offline: %s", hosttest.OfflineReason())
	}
	t.Logf("NOT offline-proven: %s", hosttest.OfflineReason())
}

// Every installed host answers --version with its pinned version.
func TestHostVersions(t *testing.T) {
	for _, p := range hosttest.Pins(t) {
		t.Run(p.Name, func(t *testing.T) {
			cmd := exec.Command(hosttest.Host(t, p.Name), "--version")
			cmd.Env = hosttest.Scratch(t).Environ()
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s --version: %v", p.Name, err)
			}
			if !strings.Contains(string(out), p.Version) {
				t.Errorf("%s --version = %q, want %s", p.Name, out, p.Version)
			}
		})
	}
}

func TestDelegationsBinary(t *testing.T) {
	out, err := exec.Command(hosttest.Delegations(t), "help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "register") {
		t.Errorf("delegations help: %v\n%s", err, out)
	}
}
