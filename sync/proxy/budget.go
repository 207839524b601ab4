package proxy

import "sync/atomic"

// DefaultSpliceBudget is the budget of a Proxy whose Budget is nil (config
// sync.splice_budget_bytes's default).
const DefaultSpliceBudget = 256 << 20

// defaultBudget is shared by the proxies without a Budget of their own.
var defaultBudget = NewBudget(DefaultSpliceBudget)

// Budget bounds the bytes of upstream bodies that the proxies sharing it hold
// in memory at once to splice the section into them. A body that does not fit
// is never waited for: it is streamed with only its token rewritten, the
// token keeping the client's position, so that the section comes with the
// next sync instead (nothing is lost or delivered twice). It is safe for
// concurrent use.
type Budget struct {
	limit int64
	used  atomic.Int64
}

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int64) *Budget { return &Budget{limit: limit} }

// Used returns the bytes currently held.
func (b *Budget) Used() int64 { return b.used.Load() }

// take reserves n bytes, if they fit.
func (b *Budget) take(n int64) bool {
	for {
		used := b.used.Load()
		if used+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			budgetUsed.Add(float64(n))
			return true
		}
	}
}

// give returns n reserved bytes.
func (b *Budget) give(n int64) {
	b.used.Add(-n)
	budgetUsed.Sub(float64(n))
}

// reservation is what one body holds of a budget: the capacity of the
// buffers it allocated for that body.
type reservation struct {
	budget *Budget
	held   int64
}

// grow reserves n more bytes, if they fit.
func (r *reservation) grow(n int64) bool {
	if !r.budget.take(n) {
		return false
	}
	r.held += n
	return true
}

// keep gives back everything held beyond n bytes.
func (r *reservation) keep(n int64) {
	if r.held > n {
		r.budget.give(r.held - n)
		r.held = n
	}
}

// release gives back everything held.
func (r *reservation) release() { r.keep(0) }
