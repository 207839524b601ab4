//go:build !race

package support

// raceEnabled reports whether the tests were built with -race; the threepidd
// binary they run is then built with -race too.
const raceEnabled = false
