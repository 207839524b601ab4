package support

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// FreePort asks the OS for a free TCP port on 127.0.0.1, for a server that
// takes its port on the command line or in its configuration rather than
// binding port 0 itself.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// LoadAverage is the machine's 1, 5 and 15 minute load averages from
// /proc/loadavg, for the record of a benchmark ("unknown" where that cannot
// be read).
func LoadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if fields := strings.Fields(string(data)); err == nil && len(fields) >= 3 {
		return strings.Join(fields[:3], ", ")
	}
	return "unknown"
}
