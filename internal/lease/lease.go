// Package lease claims the store's job leases (storage.Jobs) for the
// one-at-a-time passes of threepidd: import and reconcile. A holder is named
// host/pid/random, so that a pass killed on this host (its lease not given
// up) is taken over at once by the next one instead of blocking it until
// the lease runs out.
package lease

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/threepidd/threepidd/storage"
)

// thisProcess names this process in leases: host/pid/random.
var thisProcess = func() string {
	host, _ := os.Hostname()
	return host + "/" + strconv.Itoa(os.Getpid()) + "/" + rand.Text()[:8]
}()

// Holder is name, or this process's own name when name is "".
func Holder(name string) string { return cmp.Or(name, thisProcess) }

// BusyError is returned when another holder has the lease of a job.
type BusyError struct {
	// Job is the job's name ("import", "reconcile").
	Job    string
	Holder string
	Until  time.Time
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("another %s (%s) is running, its lease ends %s", e.Job, e.Holder, e.Until.UTC().Format(time.RFC3339))
}

// Claim takes the lease of job name for holder, as storage.Jobs.ClaimJob,
// first ending the lease of a holder that was killed on this host. It
// returns the job and whether holder has it now.
func Claim(ctx context.Context, jobs storage.Jobs, name, holder string, now, leaseUntil, firstRun int64, force bool) (storage.Job, bool, error) {
	job, claimed, err := jobs.ClaimJob(ctx, name, holder, now, leaseUntil, firstRun, force)
	if err != nil || claimed || !dead(job.Holder) {
		return job, claimed, err
	}
	if err := jobs.ReleaseJob(ctx, name, job.Holder); err != nil {
		return job, false, err
	}
	return jobs.ClaimJob(ctx, name, holder, now, leaseUntil, firstRun, force)
}

// dead reports whether holder names a process of this host that no longer
// runs (killed before it could give its lease up).
func dead(holder string) bool {
	parts := strings.Split(holder, "/")
	host, _ := os.Hostname()
	if len(parts) != 3 || parts[0] != host {
		return false
	}
	pid, err := strconv.Atoi(parts[1])
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
