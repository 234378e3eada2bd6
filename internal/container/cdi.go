package container

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
)

// cdiDevices is the Container Device Interface registry: the spec files
// under the configured dirs (a later dir overrides an earlier one).
type cdiDevices struct {
	dirs []string
	// cache is nil when no dir is configured. It does not watch the dirs:
	// inject rescans them first, so a spec a DRA driver or device plugin
	// wrote just before CreateContainer is always seen (an fsnotify event
	// may not have been handled yet), and nothing is read for containers
	// that ask for no device.
	cache *cdi.Cache
}

func newCDIDevices(dirs []string) *cdiDevices {
	r := &cdiDevices{dirs: dirs}
	if len(dirs) > 0 {
		r.cache, _ = cdi.NewCache(cdi.WithSpecDirs(dirs...), cdi.WithAutoRefresh(false)) // its error is always nil
	}
	return r
}

// cdiDeviceNames lists the CDI devices a container asks for: its
// CDI_devices, then those of its cdi.k8s.io/* annotations, each once. Like
// containerd and CRI-O, the pod's annotations are not read: the kubelet
// copies a pod's (user-written) annotations into the sandbox config, and a
// device, with its hooks run as root on the node, must come from a device
// plugin or a DRA driver, not from whoever may create a pod.
func cdiDeviceNames(cfg *runtimeapi.ContainerConfig) ([]string, error) {
	var names []string
	add := func(n string) {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for i, d := range cfg.GetCDIDevices() {
		if !parser.IsQualifiedName(d.GetName()) {
			return nil, fmt.Errorf("cdi_devices[%d]: %q is not a qualified CDI device name (vendor.com/class=name): %w", i, d.GetName(), errdefs.ErrInvalidArgument)
		}
		add(d.GetName())
	}
	_, annotated, err := cdi.ParseAnnotations(cfg.GetAnnotations())
	if err != nil {
		return nil, fmt.Errorf("annotations %s*: %w: %w", cdi.AnnotationPrefix, err, errdefs.ErrInvalidArgument)
	}
	sort.Strings(annotated) // from a map: keep the spec the same for the same config
	for _, n := range annotated {
		add(n)
	}
	return names, nil
}

// inject applies the edits of the named devices and of their specs to the
// OCI spec: environment, device nodes with their cgroup rules, mounts,
// hooks, additional GIDs. A device that no spec defines, or whose spec
// cannot be read or applied, is an error naming it and the spec files
// concerned; it is never dropped. Such errors are FailedPrecondition: the
// request is well formed, the node lacks what it names (a DRA driver may
// not have written the spec yet), and the kubelet retries.
func (r *cdiDevices) inject(spec *specs.Spec, names []string) error {
	if len(names) == 0 {
		return nil
	}
	if r.cache == nil {
		return fmt.Errorf("CDI devices %s: no CDI spec dirs are configured ([cdi] spec_dirs): %w", strings.Join(names, ", "), errdefs.ErrFailedPrecondition)
	}
	_ = r.cache.Refresh() // the errors, per file, are read below when they matter
	unresolved, err := r.cache.InjectDevices(spec, names...)
	if len(unresolved) > 0 {
		return fmt.Errorf("%s%s: %w", r.unresolvedError(unresolved), r.specErrors(), errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return fmt.Errorf("CDI devices %s (specs %s): %w: %w", strings.Join(names, ", "), strings.Join(r.specFiles(names), ", "), err, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// unresolvedError names each device no spec defines, and the spec files
// of its vendor and class that were read.
func (r *cdiDevices) unresolvedError(unresolved []string) string {
	var parts []string
	for _, name := range unresolved {
		vendor, class, _, _ := parser.ParseQualifiedName(name)
		var files []string
		for _, s := range r.cache.GetVendorSpecs(vendor) {
			if s.GetClass() == class {
				files = append(files, s.GetPath())
			}
		}
		where := "no spec file of " + vendor + "/" + class
		if len(files) > 0 {
			where = "not in " + strings.Join(files, ", ")
		}
		parts = append(parts, fmt.Sprintf("%q (%s)", name, where))
	}
	return "unknown CDI devices in the spec dirs " + strings.Join(r.dirs, ", ") + ": " + strings.Join(parts, ", ")
}

// specErrors says which spec files failed to load, and why: a device in
// one of them is unknown.
func (r *cdiDevices) specErrors() string {
	errs := r.cache.GetErrors()
	if len(errs) == 0 {
		return ""
	}
	paths := make([]string, 0, len(errs))
	for p := range errs {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var b strings.Builder
	b.WriteString("; spec files with errors:")
	for _, p := range paths {
		for _, e := range errs[p] {
			fmt.Fprintf(&b, " %s: %v;", p, e)
		}
	}
	return strings.TrimSuffix(b.String(), ";")
}

// specFiles lists the spec files the named devices come from.
func (r *cdiDevices) specFiles(names []string) []string {
	var out []string
	for _, n := range names {
		if d := r.cache.GetDevice(n); d != nil && !slices.Contains(out, d.GetSpec().GetPath()) {
			out = append(out, d.GetSpec().GetPath())
		}
	}
	return out
}
