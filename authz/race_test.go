//go:build race

package authz_test

// raceDetector says the tests run under the race detector, which makes the
// brute-force reference several times slower: the property tests run fewer
// worlds there, and their full set without it.
const raceDetector = true
