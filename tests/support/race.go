//go:build race

package support

// RaceEnabled reports whether the tests were built with -race; the threepidd
// binary they run is then built with -race too.
const RaceEnabled = true
