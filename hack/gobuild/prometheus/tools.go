//go:build tools

// Package tools pins the prometheus command built from this module.
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
