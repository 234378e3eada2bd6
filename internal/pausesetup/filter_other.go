//go:build !amd64

package pausesetup

// Supported says that husk-pause has no setup entry point here: the infra
// is started through the OCI runtime.
const Supported = false

const auditArch, abiBit = 0, 0

var afterSetup []uintptr
