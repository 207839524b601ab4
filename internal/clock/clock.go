// Package clock is the one way threepidd's services read the time, so that
// tests can set it.
package clock

import "time"

// Func returns the current time. The zero value (nil) is the real clock:
// services keep a Func field that tests set and everyone else leaves nil.
type Func func() time.Time

// Now returns f's time, or time.Now() when f is nil.
func (f Func) Now() time.Time {
	if f == nil {
		return time.Now()
	}
	return f()
}
