package lease

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
)

// exitedPid is the pid of a process of this host that has ended.
func exitedPid(t *testing.T) int {
	t.Helper()
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Skipf("no `true` to run: %v", err)
	}
	return exited.Process.Pid
}

func TestDead(t *testing.T) {
	host, _ := os.Hostname()
	pid := exitedPid(t)
	for _, c := range []struct {
		holder string
		dead   bool
	}{
		{fmt.Sprintf("%s/%d/X", host, pid), true},
		{fmt.Sprintf("%s/%d/X", host, os.Getpid()), false},
		{fmt.Sprintf("elsewhere/%d/X", pid), false},
		{"not a holder", false},
	} {
		if got := dead(c.holder); got != c.dead {
			t.Errorf("dead(%q) = %v, want %v", c.holder, got, c.dead)
		}
	}
}

// TestClaim: a live holder keeps the lease; one killed on this host loses it
// to the next claim, which continues at its cursor.
func TestClaim(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		host, _ := os.Hostname()
		now := time.Now().UnixMilli()
		until := now + time.Hour.Milliseconds()
		claim := func(holder string) (storage.Job, bool) {
			t.Helper()
			job, ok, err := Claim(ctx, s, "job", holder, now, until, 0, true)
			if err != nil {
				t.Fatal(err)
			}
			return job, ok
		}
		live := fmt.Sprintf("%s/%d/live", host, os.Getpid())
		if _, ok := claim(live); !ok {
			t.Fatal("the first claim failed")
		}
		if err := s.SaveJobCursor(ctx, "job", live, "page 7", until); err != nil {
			t.Fatal(err)
		}
		if job, ok := claim(Holder("")); ok || job.Holder != live {
			t.Fatalf("claimed from a live holder: %v, job %+v", ok, job)
		}
		killed := fmt.Sprintf("%s/%d/killed", host, exitedPid(t))
		if err := s.ReleaseJob(ctx, "job", live); err != nil {
			t.Fatal(err)
		}
		if _, ok := claim(killed); !ok {
			t.Fatal("claim after a release failed")
		}
		job, ok := claim(Holder(""))
		if !ok || job.Cursor != "page 7" {
			t.Fatalf("the lease of a killed holder: claimed %v, job %+v; want it, at its cursor", ok, job)
		}
	})
}

func TestBusyError(t *testing.T) {
	err := error(&BusyError{Job: "import", Holder: "h/1/x", Until: time.Unix(0, 0)})
	var busy *BusyError
	if !errors.As(fmt.Errorf("run: %w", err), &busy) || err.Error() != "another import (h/1/x) is running, its lease ends 1970-01-01T00:00:00Z" {
		t.Fatalf("%v", err)
	}
}
