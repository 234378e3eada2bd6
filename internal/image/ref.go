// Package image is husk's image store: pulls through
// github.com/google/go-containerregistry with per-registry mirrors and
// credentials, content-addressed blobs verified as they are written, layers
// unpacked once into directories usable as overlayfs lower dirs and shared
// by every image that has them, and image records in the daemon's bbolt.
package image

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
)

// dockerHub is how the kubelet spells Docker Hub in references; the
// registry client calls it index.docker.io.
const dockerHub = "docker.io"

// Reference is a parsed, normalised image reference.
type Reference struct {
	// Host is the registry as the kubelet names it (docker.io for Hub).
	Host string
	// Repository is the path within the registry (library/busybox).
	Repository string
	// Tag or Digest: one of them is set.
	Tag    string
	Digest string
}

// ParseReference normalises ref the way the kubelet does: busybox is
// docker.io/library/busybox:latest; a digest reference keeps no tag.
func ParseReference(ref string) (Reference, error) {
	if ref == "" || strings.ContainsAny(ref, " \t\n\x00") || len(ref) > 4096 {
		return Reference{}, fmt.Errorf("image reference %q: %w", ref, errdefs.ErrInvalidArgument)
	}
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return Reference{}, fmt.Errorf("image reference %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	out := Reference{Host: r.Context().RegistryStr(), Repository: r.Context().RepositoryStr()}
	if out.Host == name.DefaultRegistry {
		out.Host = dockerHub
	}
	switch v := r.(type) {
	case name.Digest:
		out.Digest = v.DigestStr()
	case name.Tag:
		out.Tag = v.TagStr()
	}
	return out, nil
}

// Name is host/repository.
func (r Reference) Name() string { return r.Host + "/" + r.Repository }

// String is the normalised reference: name:tag or name@digest.
func (r Reference) String() string {
	if r.Digest != "" {
		return r.Name() + "@" + r.Digest
	}
	return r.Name() + ":" + r.Tag
}

// on returns the reference as the registry client needs it for endpoint
// host (host:port), plain HTTP when insecure.
func (r Reference) on(host string, insecure bool) (name.Reference, error) {
	opts := []name.Option{name.WeakValidation}
	if insecure {
		opts = append(opts, name.Insecure)
	}
	if host == dockerHub {
		host = name.DefaultRegistry
	}
	s := host + "/" + r.Repository
	if r.Digest != "" {
		return name.NewDigest(s+"@"+r.Digest, opts...)
	}
	return name.NewTag(s+":"+r.Tag, opts...)
}
