//go:build unix

package python

import (
	"os/exec"
	"syscall"
)

// inOwnProcessGroup runs cmd in a process group of its own and makes its
// cancellation kill the whole group: the interpreter and the footfall
// process it started.
func inOwnProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
