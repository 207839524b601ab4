//go:build tools

// Package tools pins the Dendrite commands that the real-peer test suite
// (tests/realpeer) builds and runs. It is a module of its own so that the
// threepidd module never depends on Dendrite.
package tools

import (
	_ "github.com/element-hq/dendrite/cmd/create-account"
	_ "github.com/element-hq/dendrite/cmd/dendrite"
	_ "github.com/element-hq/dendrite/cmd/generate-config"
	_ "github.com/element-hq/dendrite/cmd/generate-keys"
)
