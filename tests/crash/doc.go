// Package crash proves threepidd under faults: the real binary killed with
// SIGKILL at random points of a stream of requests and restarted loses none
// of what it acknowledged and keeps nothing half-written; the unbind outbox
// resumes after a kill; a Postgres that drops away (cut by a TCP proxy) gives
// bounded Matrix errors and threepidd recovers without a restart. The package
// holds only tests.
package crash
