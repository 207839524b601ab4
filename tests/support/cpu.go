package support

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc's CPU times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// Pid is the process's ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// ProcessCPU is the CPU time (user and system, with its reaped children's)
// process pid has used so far, from /proc/<pid>/stat (Linux only).
func ProcessCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time of %d: %w", pid, err)
	}
	_, cpu, err := parseStat(string(data))
	return cpu, err
}

// parseStat returns the command name and the CPU time of a /proc/<pid>/stat
// line: user and system, its own and that of the children it reaped (a
// Postgres server's exited backends, an nginx master's old workers). The
// name is in parentheses and may hold spaces.
func parseStat(line string) (string, time.Duration, error) {
	open, closing := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
	if open < 0 || closing < open {
		return "", 0, fmt.Errorf("malformed stat line %.60q", line)
	}
	// After the name: state (field 3) ... utime (14), stime (15), cutime
	// (16), cstime (17).
	fields := strings.Fields(line[closing+1:])
	if len(fields) < 15 {
		return "", 0, fmt.Errorf("short stat line %.60q", line)
	}
	var ticks int64
	for _, f := range fields[11:15] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return "", 0, fmt.Errorf("stat line %.60q: bad CPU time %q", line, f)
		}
		ticks += v
	}
	return line[open+1 : closing], time.Duration(ticks) * clockTick, nil
}

// CommandCPU is the CPU time used so far by the running processes whose
// command name is name (e.g. every "postgres" backend and its server, whose
// count includes the backends that exited).
func CommandCPU(name string) time.Duration {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	var total time.Duration
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			continue // exited meanwhile
		}
		if comm, cpu, err := parseStat(string(data)); err == nil && comm == name {
			total += cpu
		}
	}
	return total
}

// MachineCPU is the CPU time of all cores so far from /proc/stat: busy
// (everything but idle and iowait) and total.
func MachineCPU() (busy, total time.Duration, err error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat starts %.60q", line)
	}
	for i, f := range fields[1:] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat field %q: %w", f, err)
		}
		total += time.Duration(v) * clockTick
		if i != 3 && i != 4 { // idle, iowait
			busy += time.Duration(v) * clockTick
		}
	}
	return busy, total, nil
}
