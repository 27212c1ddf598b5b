//go:build tools

// Build module for smokescreen, the browser agent's egress proxy (hack/build-tools.sh).
package tools

import _ "github.com/stripe/smokescreen"
