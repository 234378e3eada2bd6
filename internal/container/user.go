package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"
	"github.com/moby/sys/user"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/oci"
)

// resolveUser decides the identity of the container's process: the
// security context's run_as_user / run_as_username, else the image's
// user, resolved against the image's /etc/passwd and /etc/group (opened
// inside the rootfs: a symlink in the image cannot point them at the
// host's). run_as_group replaces the group; supplemental groups are
// added, or with the Strict policy are the only ones.
func resolveUser(rootfs string, sc *runtimeapi.LinuxContainerSecurityContext, imageUser string) (oci.User, error) {
	spec := imageUser
	switch {
	case sc.GetRunAsUser() != nil:
		spec = strconv.FormatInt(sc.GetRunAsUser().GetValue(), 10)
	case sc.GetRunAsUsername() != "":
		spec = sc.GetRunAsUsername()
	}
	if spec == "" {
		spec = "0"
	}
	passwd, err := openInRoot(rootfs, "/etc/passwd")
	if err != nil {
		return oci.User{}, err
	}
	if passwd != nil {
		defer passwd.Close()
	}
	var group io.Reader
	if sc.GetSupplementalGroupsPolicy() != runtimeapi.SupplementalGroupsPolicy_Strict {
		g, err := openInRoot(rootfs, "/etc/group")
		if err != nil {
			return oci.User{}, err
		}
		if g != nil {
			defer g.Close()
			group = g
		}
	}
	var pr io.Reader
	if passwd != nil {
		pr = passwd
	}
	eu, err := user.GetExecUser(spec, &user.ExecUser{Home: "/"}, pr, group)
	if err != nil {
		return oci.User{}, fmt.Errorf("user %q: %v: %w", spec, err, errdefs.ErrInvalidArgument)
	}
	u := oci.User{UID: uint32(eu.Uid), GID: uint32(eu.Gid), Home: eu.Home}
	if g := sc.GetRunAsGroup(); g != nil {
		u.GID = uint32(g.GetValue())
	}
	// The primary group is listed too, as containerd does, so the
	// process's group list (id -G) holds it.
	seen := map[uint32]bool{}
	add := func(g uint32) {
		if !seen[g] {
			seen[g] = true
			u.AdditionalGids = append(u.AdditionalGids, g)
		}
	}
	add(u.GID)
	for _, g := range eu.Sgids {
		add(uint32(g))
	}
	for _, g := range sc.GetSupplementalGroups() {
		add(uint32(g))
	}
	return u, nil
}

// openInRoot opens path resolved inside root; nil when it does not exist.
func openInRoot(root, path string) (*os.File, error) {
	p, err := fs.RootPath(root, path)
	if err != nil {
		return nil, fmt.Errorf("resolve %s in rootfs: %w", path, err)
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s in rootfs: %w", path, err)
	}
	return f, nil
}
