package hosttest_test

import (
	"os"
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

func TestHostAndBuild(t *testing.T) {
	bin := hosttest.Host(t, "opencode")
	t.Log(bin)
	t.Log(hosttest.Delegations(t))
}
