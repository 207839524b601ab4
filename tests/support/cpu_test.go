package support

import (
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	for _, c := range []struct {
		line, comm string
		cpu        time.Duration
		bad        bool
	}{
		{line: "42 (postgres) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 70 30 20 0 1 0 100 1000 10", comm: "postgres", cpu: 4 * time.Second},
		{line: "7 (a b) c) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 1 1", comm: "a b) c", cpu: 30 * time.Millisecond},
		{line: "7 (x) R 1", bad: true},
		{line: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 1 2 x 0 20", bad: true},
		{line: "no parentheses", bad: true},
	} {
		comm, cpu, err := parseStat(c.line)
		if (err != nil) != c.bad || (!c.bad && (comm != c.comm || cpu != c.cpu)) {
			t.Errorf("parseStat(%q) = %q, %v, %v", c.line, comm, cpu, err)
		}
	}
	if _, err := ProcessCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if busy, total, err := MachineCPU(); err != nil || busy > total || total == 0 {
		t.Fatalf("MachineCPU = %v, %v, %v", busy, total, err)
	}
}
