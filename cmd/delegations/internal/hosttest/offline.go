package hosttest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

// offlineEnv marks the test process RunOffline re-executed inside a new
// network namespace.
const offlineEnv = "DELEGATIONS_HOSTTEST_NETNS"

// notOffline says why this process did not re-execute itself offline; set
// once by RunOffline before any test runs.
var notOffline = "RunOffline was not called (TestMain)"

// RunOffline runs the tests and returns their exit code, for TestMain:
//
//	func TestMain(m *testing.M) { code := hosttest.RunOffline(m); hosttest.Cleanup(); os.Exit(code) }
//
// When the machine allows it (root, or unprivileged user namespaces), it
// re-executes the test binary, with the same arguments, working directory,
// stdin, stdout and stderr, inside a new network namespace whose only
// interface is loopback, and returns the child's exit code. Otherwise it
// runs the tests in place and prints one line saying why the run is not
// offline-proven.
func RunOffline(m interface{ Run() int }) int {
	if os.Getenv(offlineEnv) == "1" {
		if err := loopbackUp(); err != nil {
			notOffline = err.Error()
			fmt.Fprintf(os.Stderr, "hosttest: inside the network namespace, %v\n", err)
		} else {
			notOffline = ""
		}
		return m.Run()
	}
	unshare, err := unshareArgs()
	if err != nil {
		notOffline = fmt.Sprintf("not re-executed in a network namespace: %v", err)
		fmt.Fprintf(os.Stderr, "hosttest: this run is not offline-proven: %v\n", err)
		return m.Run()
	}
	self, err := os.Executable()
	if err != nil {
		notOffline = fmt.Sprintf("not re-executed in a network namespace: %v", err)
		fmt.Fprintf(os.Stderr, "hosttest: this run is not offline-proven: %v\n", err)
		return m.Run()
	}
	cmd := exec.Command(unshare[0], append(append(unshare[1:], "--", self), os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), offlineEnv+"=1")
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "hosttest: re-exec offline: %v\n", err)
		return 1
	}
	// Pass on what go test and the user send (the child has its own
	// -test.timeout and panics on it by itself).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	signal.Stop(sigs)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return ee.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "hosttest: offline test process: %v\n", err)
		return 1
	}
}

// unshareArgs returns the command that runs a program in a new network
// namespace, after checking that it works here.
func unshareArgs() ([]string, error) {
	path, err := exec.LookPath("unshare")
	if err != nil {
		return nil, errors.New("no unshare(1) in PATH")
	}
	args := []string{path, "--net"}
	if os.Geteuid() != 0 {
		// An unprivileged user namespace maps us to root in it, which may
		// then own a network namespace.
		args = append(args, "--map-root-user")
	}
	if out, err := exec.Command(args[0], append(args[1:], "--", "true")...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%v: %v: %s", args, err, out)
	}
	if _, err := ipCommand(); err != nil {
		return nil, err
	}
	return args, nil
}

// ipCommand finds ip(8), often outside a user's PATH.
func ipCommand() (string, error) {
	if p, err := exec.LookPath("ip"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no ip(8) to bring loopback up")
}

func loopbackUp() error {
	ip, err := ipCommand()
	if err != nil {
		return err
	}
	if out, err := exec.Command(ip, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set lo up: %v: %s", err, out)
	}
	return nil
}

// Offline reports whether this process runs where the only network
// interface is loopback: then nothing it starts can reach another machine.
// It looks at the interfaces only; it never dials.
func Offline() bool {
	ifs, err := net.Interfaces()
	if err != nil || len(ifs) != 1 {
		return false
	}
	return ifs[0].Flags&net.FlagLoopback != 0 && ifs[0].Name == "lo"
}

// OfflineReason says why Offline is false ("" when it is true).
func OfflineReason() string {
	if Offline() {
		return ""
	}
	if notOffline != "" {
		return notOffline
	}
	ifs, _ := net.Interfaces()
	names := make([]string, 0, len(ifs))
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return fmt.Sprintf("network interfaces besides lo: %v", names)
}
