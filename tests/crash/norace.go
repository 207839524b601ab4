//go:build !race

package crash

// raceEnabled reports whether this package was built with -race; the binary
// under test is then built with -race too.
const raceEnabled = false
