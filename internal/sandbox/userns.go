package sandbox

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
)

// explainUserns adds to an infra start that failed for a pod with its own
// user namespace what is the usual cause: the pod's root is an
// unprivileged user of the node, which must reach the infra's root under
// huskd's state dir, and a dir above it (say a state dir under a 0700
// one) does not let it. Other failures are returned as they are.
func (m *Manager) explainUserns(sb *Sandbox, err error) error {
	if _, ownUserns := podNamespaces(sb.config); !ownUserns {
		return err
	}
	if why := searchableByOthers(m.rootfs); why != nil {
		return fmt.Errorf("%w; %w", err, why)
	}
	return err
}

// searchableByOthers checks that every dir from path up to / has the
// search bit for others, which a user owning none of them needs to reach
// path. It names the first dir that lacks it.
func searchableByOthers(path string) error {
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.IsDir() && fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is mode %#o: a pod with a user namespace needs every dir down to %s searchable by others (o+x): %w",
				p, fi.Mode().Perm(), path, errdefs.ErrFailedPrecondition)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
