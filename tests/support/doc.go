// Package support is what threepidd's test packages share beyond the harness:
// one HTTP client for tests ([Send], [Do], [Response]), the threepidd binary
// built once per test process ([ThreepiddBinary]), child processes with their
// output in a file ([StartProcess]), slog output captured for assertions
// ([CaptureLogs]), nginx with the shipped threepidd.conf in front of one or
// more instances ([StartNginx]), a free port ([FreePort]) and the machine's
// load average ([LoadAverage]).
package support
