//go:build !unix

package python

import "os/exec"

// inOwnProcessGroup does nothing here: cancelling cmd kills the interpreter only.
func inOwnProcessGroup(cmd *exec.Cmd) {}
