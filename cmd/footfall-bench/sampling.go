package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// What the harness reads of the machine and of a server process: /proc
// (a process's RSS, threads, descriptors and CPU; the machine's busy time)
// and, through metrics.go, a footfall's GET /metrics. Every subcommand
// samples through snapshot and cpuWatch.

// procStats are a server process's figures from /proc.
type procStats struct {
	RSSKiB  int64
	Threads int
	FDs     int
	CPU     time.Duration // utime + stime
}

// clockTick is USER_HZ, 100 on every Linux this runs on.
const clockTick = 100

// readProcStats reads /proc/<pid>/status, stat and fd.
func readProcStats(pid int) (procStats, error) {
	var s procStats
	p := "/proc/" + strconv.Itoa(pid)
	status, err := os.ReadFile(p + "/status")
	if err != nil {
		return s, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			s.RSSKiB, _ = strconv.ParseInt(f[0], 10, 64)
		case "Threads":
			s.Threads, _ = strconv.Atoi(f[0])
		}
	}
	stat, err := os.ReadFile(p + "/stat")
	if err != nil {
		return s, err
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return s, err
	}
	s.CPU = cpu
	if ents, err := os.ReadDir(p + "/fd"); err == nil {
		s.FDs = len(ents)
	}
	return s, nil
}

// parseStatCPU returns utime+stime of a /proc/<pid>/stat line.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	// After "pid (comm)": state is field 3, utime 14, stime 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed /proc stat times")
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// stats reads the server's figures; ok is false when its pid is unknown.
func (t *target) stats() (procStats, bool) {
	if t.pid == 0 {
		return procStats{}, false
	}
	s, err := readProcStats(t.pid)
	return s, err == nil
}

// loadAvg is the 1-minute load average (0 if unknown).
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// clientCPU is the harness's own CPU time so far.
func clientCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineCPU is the busy and total time of all CPUs from /proc/stat.
type machineCPU struct{ busy, total int64 } // clock ticks

func readMachineCPU() (machineCPU, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return parseMachineCPU(line)
}

// parseMachineCPU reads the "cpu" line of /proc/stat: user nice system
// idle iowait irq softirq steal ...; idle and iowait are not busy.
func parseMachineCPU(line string) (machineCPU, bool) {
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return machineCPU{}, false
	}
	var m machineCPU
	for i, v := range f[1:] {
		if i >= 8 { // guest times are already in user and nice
			break
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return machineCPU{}, false
		}
		m.total += n
		if i != 3 && i != 4 {
			m.busy += n
		}
	}
	return m, true
}

func (m machineCPU) busyFraction(prev machineCPU) float64 {
	if m.total <= prev.total {
		return 0
	}
	return float64(m.busy-prev.busy) / float64(m.total-prev.total)
}

// busySince is the CPU time all processes used since prev.
func (m machineCPU) busySince(prev machineCPU) time.Duration {
	return time.Duration(m.busy-prev.busy) * time.Second / clockTick
}

// snapshot is what /proc and /metrics say of the servers at one moment,
// summed over the nodes.
type snapshot struct {
	proc      procStats
	procOK    bool // every node's /proc was read (its pid is known)
	metrics   serverMetrics
	metricsOK bool // some node answered GET /metrics
}

// takeSnapshot reads /proc and /metrics of every node.
func takeSnapshot(ctx context.Context, nodes ...*target) snapshot {
	s := snapshot{procOK: len(nodes) > 0}
	for _, n := range nodes {
		if p, ok := n.stats(); ok {
			s.proc.RSSKiB += p.RSSKiB
			s.proc.Threads += p.Threads
			s.proc.FDs += p.FDs
			s.proc.CPU += p.CPU
		} else {
			s.procOK = false
		}
		if m, ok := n.scrapeMetrics(ctx); ok {
			s.metricsOK = true
			s.metrics.Goroutines += m.Goroutines
			s.metrics.HeapInuseKiB += m.HeapInuseKiB
			s.metrics.StackKiB += m.StackKiB
			s.metrics.OpenConns += m.OpenConns
			s.metrics.NextGCKiB += m.NextGCKiB
			s.metrics.SocketFull += m.SocketFull
		}
	}
	return s
}

// cpuWatch measures, from its start, the CPU the harness used and the CPU
// every other process of the machine used: on a shared machine, what
// disturbed the figures.
type cpuWatch struct {
	machine   machineCPU
	machineOK bool
	client    time.Duration
}

func startCPUWatch() cpuWatch {
	m, ok := readMachineCPU()
	return cpuWatch{machine: m, machineOK: ok, client: clientCPU()}
}

// clientUsed is the harness's CPU time since the start.
func (w cpuWatch) clientUsed() time.Duration { return clientCPU() - w.client }

// otherCPU is the CPU time, in seconds, that processes other than the
// server (which used serverUsed) and the harness used since the start; ok
// is false without /proc/stat.
func (w cpuWatch) otherCPU(serverUsed time.Duration) (float64, bool) {
	m, ok := readMachineCPU()
	if !ok || !w.machineOK {
		return 0, false
	}
	other := m.busySince(w.machine) - serverUsed - w.clientUsed()
	return round(max(other, 0).Seconds(), 2), true
}
