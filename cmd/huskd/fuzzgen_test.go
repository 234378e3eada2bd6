package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// canary is in every path token that tries to leave huskd's dirs: a file
// with it in its name outside them is a write that escaped.
const canary = "hfzcanary"

// criMethod is one RPC of the CRI, from the protobuf descriptors: every
// method of both services, whatever cri-api version husk builds with.
type criMethod struct {
	path         string // /runtime.v1.RuntimeService/Version
	name         string // Version
	in, out      protoreflect.MessageType
	serverStream bool
}

var criMethods = func() []criMethod {
	var out []criMethod
	for _, svc := range []protoreflect.FullName{"runtime.v1.RuntimeService", "runtime.v1.ImageService"} {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(svc)
		if err != nil {
			panic(err)
		}
		methods := d.(protoreflect.ServiceDescriptor).Methods()
		for i := 0; i < methods.Len(); i++ {
			md := methods.Get(i)
			in, err1 := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
			res, err2 := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
			if err := errors.Join(err1, err2); err != nil {
				panic(err)
			}
			out = append(out, criMethod{path: "/" + string(svc) + "/" + string(md.Name()), name: string(md.Name()),
				in: in, out: res, serverStream: md.IsStreamingServer()})
		}
	}
	return out
}()

// cursor reads the fuzz input; past its end every byte is 0.
type cursor struct{ data []byte }

func (c *cursor) empty() bool { return len(c.data) == 0 }

func (c *cursor) byte() byte {
	if len(c.data) == 0 {
		return 0
	}
	b := c.data[0]
	c.data = c.data[1:]
	return b
}

func (c *cursor) intn(n int) int {
	if n <= 1 {
		c.byte()
		return 0
	}
	return int(c.byte()) % n
}

func (c *cursor) bytes(n int) []byte {
	n = min(n, len(c.data))
	b := c.data[:n]
	c.data = c.data[n:]
	return b
}

// pool is what a sequence made so far: the IDs later requests name.
type pool struct {
	pods       []string
	podConfigs map[string]*runtimeapi.PodSandboxConfig
	containers []string
	images     []string
}

// pick is the most recent of ids for b 0, an older one otherwise, or ""
// when there is none.
func pick(b byte, ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	return ids[len(ids)-1-int(b)%len(ids)]
}

// program is a sequence of CRI calls decoded from a fuzz input.
type program struct {
	c    *cursor
	g    *generator
	pool *pool
	ops  int
	m    criMethod
	req  proto.Message
}

const maxOps = 64

func newProgram(g *generator, data []byte, imageID string) *program {
	p := &pool{podConfigs: map[string]*runtimeapi.PodSandboxConfig{}, images: []string{imageID}}
	c := &cursor{data: data}
	g.c, g.pool = c, p
	return &program{c: c, g: g, pool: p}
}

// next decodes the next call: a method (one byte), its template filled
// from the pool (one byte: which pod, container or image), then changes
// to the request's fields (one byte for how many, a few for each).
func (p *program) next() bool {
	if p.c.empty() || p.ops >= maxOps {
		return false
	}
	p.ops++
	p.m = criMethods[p.c.intn(len(criMethods))]
	which := p.c.byte()
	if t, ok := templates[p.m.name]; ok {
		p.req = t(p, which)
	} else {
		p.req = p.m.in.New().Interface()
	}
	p.g.mutate(p.req.ProtoReflect())
	return true
}

func (p *program) method() string { return p.m.name }

// call sends the request and keeps the IDs of what it made. It returns
// the gRPC code and message.
func (p *program) call(conn *grpc.ClientConn) (code, msg string) {
	timeout := 20 * time.Second
	if p.m.serverStream {
		timeout = 300 * time.Millisecond // GetContainerEvents never ends
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp := p.m.out.New().Interface()
	var err error
	if p.m.serverStream {
		err = callStream(ctx, conn, p.m, p.req, resp)
	} else {
		err = conn.Invoke(ctx, p.m.path, p.req, resp)
	}
	if err == nil {
		p.harvest(resp)
	}
	st, _ := status.FromError(err)
	return st.Code().String(), st.Message()
}

func callStream(ctx context.Context, conn *grpc.ClientConn, m criMethod, req, resp proto.Message) error {
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, m.path)
	if err != nil {
		return err
	}
	if err := st.SendMsg(req); err != nil {
		return err
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	for i := 0; i < 100; i++ {
		if err := st.RecvMsg(resp); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	return nil
}

func (p *program) harvest(resp proto.Message) {
	switch r := resp.(type) {
	case *runtimeapi.RunPodSandboxResponse:
		p.pool.pods = append(p.pool.pods, r.PodSandboxId)
		p.pool.podConfigs[r.PodSandboxId] = p.req.(*runtimeapi.RunPodSandboxRequest).GetConfig()
	case *runtimeapi.CreateContainerResponse:
		p.pool.containers = append(p.pool.containers, r.ContainerId)
	case *runtimeapi.PullImageResponse:
		p.pool.images = append(p.pool.images, r.ImageRef)
	}
}

// templates make a well-formed request of the method from the pool, for
// the mutations to start from; which picks the pod, container or image. A
// method without one starts from an empty request.
var templates = map[string]func(p *program, which byte) proto.Message{
	"RunPodSandbox": func(p *program, _ byte) proto.Message {
		return &runtimeapi.RunPodSandboxRequest{Config: p.g.podConfig(p.ops)}
	},
	"CreateContainer": func(p *program, which byte) proto.Message {
		pod := pick(which, p.pool.pods)
		return &runtimeapi.CreateContainerRequest{PodSandboxId: pod, SandboxConfig: p.pool.podConfigs[pod],
			Config: &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: fmt.Sprintf("c%d", p.ops)},
				Image:    &runtimeapi.ImageSpec{Image: fuzzBusybox},
				Command:  []string{"sleep", "3600"},
				LogPath:  fmt.Sprintf("c%d.log", p.ops),
				Linux:    &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{}, SecurityContext: &runtimeapi.LinuxContainerSecurityContext{}},
			}}
	},
	"StartContainer":  ctrReq(func(id string) proto.Message { return &runtimeapi.StartContainerRequest{ContainerId: id} }),
	"StopContainer":   ctrReq(func(id string) proto.Message { return &runtimeapi.StopContainerRequest{ContainerId: id} }),
	"RemoveContainer": ctrReq(func(id string) proto.Message { return &runtimeapi.RemoveContainerRequest{ContainerId: id} }),
	"ContainerStatus": ctrReq(func(id string) proto.Message {
		return &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true}
	}),
	"ContainerStats":     ctrReq(func(id string) proto.Message { return &runtimeapi.ContainerStatsRequest{ContainerId: id} }),
	"ReopenContainerLog": ctrReq(func(id string) proto.Message { return &runtimeapi.ReopenContainerLogRequest{ContainerId: id} }),
	"UpdateContainerResources": ctrReq(func(id string) proto.Message {
		return &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{CpuShares: 512}}
	}),
	"ExecSync": ctrReq(func(id string) proto.Message {
		return &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"echo", "hi"}, Timeout: 2}
	}),
	"Exec": ctrReq(func(id string) proto.Message {
		return &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh"}, Stdout: true}
	}),
	"Attach":              ctrReq(func(id string) proto.Message { return &runtimeapi.AttachRequest{ContainerId: id, Stdout: true} }),
	"CheckpointContainer": ctrReq(func(id string) proto.Message { return &runtimeapi.CheckpointContainerRequest{ContainerId: id} }),
	"StopPodSandbox":      podReq(func(id string) proto.Message { return &runtimeapi.StopPodSandboxRequest{PodSandboxId: id} }),
	"RemovePodSandbox":    podReq(func(id string) proto.Message { return &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id} }),
	"PodSandboxStatus": podReq(func(id string) proto.Message {
		return &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true}
	}),
	"PodSandboxStats": podReq(func(id string) proto.Message { return &runtimeapi.PodSandboxStatsRequest{PodSandboxId: id} }),
	"PortForward": podReq(func(id string) proto.Message {
		return &runtimeapi.PortForwardRequest{PodSandboxId: id, Port: []int32{80}}
	}),
	"UpdatePodSandboxResources": podReq(func(id string) proto.Message {
		return &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: id}
	}),
	"PullImage": imageReq(func(ref string) proto.Message {
		return &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}
	}),
	"ImageStatus": imageReq(func(ref string) proto.Message {
		return &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}, Verbose: true}
	}),
	"RemoveImage": imageReq(func(ref string) proto.Message {
		return &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}
	}),
	"Status": func(*program, byte) proto.Message { return &runtimeapi.StatusRequest{Verbose: true} },
}

func ctrReq(mk func(id string) proto.Message) func(*program, byte) proto.Message {
	return func(p *program, which byte) proto.Message { return mk(pick(which, p.pool.containers)) }
}

func podReq(mk func(id string) proto.Message) func(*program, byte) proto.Message {
	return func(p *program, which byte) proto.Message { return mk(pick(which, p.pool.pods)) }
}

// imageReq names busybox:fuzz for which 0, else an image of the pool.
func imageReq(mk func(ref string) proto.Message) func(*program, byte) proto.Message {
	return func(p *program, which byte) proto.Message {
		if which != 0 {
			return mk(pick(which, p.pool.images))
		}
		return mk(fuzzBusybox)
	}
}

// generator fills and mutates requests from the cursor.
type generator struct {
	node, cgroup string
	c            *cursor
	pool         *pool
	tokens       map[string][]string
}

func newGenerator(node, cgroup string) *generator {
	host := filepath.Join(node, "host")
	g := &generator{node: node, cgroup: cgroup, tokens: map[string][]string{
		"general": {"", "a", "fuzz", "x y", "../" + canary, "../../../../../../../tmp/" + canary, "a/b", ".", "..",
			strings.Repeat("x", 300), "\x00", "é", "kube-system", "-", "1", "true", "io.kubernetes.pod.namespace",
			"cdi.k8s.io/x", "vendor.example/class=dev", "io.kubernetes.cri.sandbox-id"},
		"log_directory": {filepath.Join(node, "logs", "p"), filepath.Join(node, "logs", "p", "..", "q"), "", "relative/logs",
			"../" + canary, filepath.Join(node, "logs")},
		"log_path": {"c.log", "c/0.log", "", "../" + canary, "../../../../../../../../tmp/" + canary, "/tmp/" + canary,
			"c/../../" + canary, ".", "..", "/"},
		"host_path": {filepath.Join(host, "dir"), filepath.Join(host, "file"), filepath.Join(host, "dir", "missing"),
			"relative/" + canary, "../" + canary, "", "/dev/null"},
		"container_path": {"/mnt", "/", "relative", "/mnt/../../" + canary, "/etc/hosts", "/proc/x", "/dev/shm", "/tmp", ""},
		"cgroup_parent":  {cgroup + "/p", "", "relative", "../" + canary, "fuzz.slice", "/"},
		"command":        {"sleep", "3600", "1", "0", "true", "false", "sh", "-c", "echo hi", "exit 3", "id", "ls", "/", "/bin/sleep", "cat", "nosuch"},
		"sysctls":        {"net.ipv4.husk_fuzz_none", "net.ipv4.ip_local_port_range", "kernel.shm_rmid_forced", "vm.swappiness", ""},
		"unified":        {"memory.high", "pids.max", "cpu.weight", "bogus", "max", "100"},
		"image": {fuzzBusybox, "busybox:other", "docker.io/library/busybox:fuzz", "", "nosuch:1", "UPPER", "a@sha256:bad",
			"localhost:1/x", "sha256:", "../" + canary},
		"handler":      {"", "runc", "crun", "nosuch", "../" + canary},
		"capabilities": {"ALL", "CAP_SYS_ADMIN", "NET_RAW", "bogus", ""},
		"device":       {"/dev/null", "/dev/zero", "/dev/nosuch", "relative", ""},
		"profile":      {"", "runtime/default", "localhost/nosuch", "unconfined", filepath.Join(host, "file"), "/nonexistent"},
		"id":           {"", "nosuch", "../../" + canary, strings.Repeat("0", 64), "0"},
	}}
	return g
}

// podConfig is a well-formed pod config, its name and UID from n.
func (g *generator) podConfig(n int) *runtimeapi.PodSandboxConfig {
	uid := fmt.Sprintf("uid%d", n)
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: fmt.Sprintf("p%d", n), Namespace: "fuzz", Uid: uid},
		Hostname:     "fuzz",
		LogDirectory: filepath.Join(g.node, "logs", uid),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent:    g.cgroup + "/pod" + uid,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{}},
		},
	}
}

// mutate makes up to three changes to m (the first byte says how many),
// each at a field the input picks: so one targeted change costs a few
// bytes, and a template whose bytes are 0 is sent as it is.
func (g *generator) mutate(m protoreflect.Message) {
	for n := g.c.intn(4); n > 0; n-- {
		g.change(m, 0)
	}
}

// change sets, clears or goes down into one field of m.
func (g *generator) change(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	if fields.Len() == 0 {
		return
	}
	fd := fields.Get(g.c.intn(fields.Len()))
	switch {
	case g.c.byte()%8 == 7:
		m.Clear(fd)
	case fd.IsMap():
		g.fillMap(m, fd, depth)
	case fd.IsList():
		g.fillList(m, fd, depth)
	case fd.Kind() == protoreflect.MessageKind:
		if depth < 5 {
			g.change(m.Mutable(fd).Message(), depth+1)
		}
	default:
		m.Set(fd, g.scalar(fd, fd))
	}
}

// fillList replaces the list with up to three values; an element that is
// a message gets changes of its own.
func (g *generator) fillList(m protoreflect.Message, fd protoreflect.FieldDescriptor, depth int) {
	l := m.Mutable(fd).List()
	l.Truncate(0)
	for n := g.c.intn(4); n > 0; n-- {
		if fd.Kind() != protoreflect.MessageKind {
			l.Append(g.scalar(fd, fd))
			continue
		}
		if depth >= 5 {
			return
		}
		e := l.NewElement()
		for k := g.c.intn(4); k > 0; k-- {
			g.change(e.Message(), depth+1)
		}
		l.Append(e)
	}
}

// fillMap adds up to three entries.
func (g *generator) fillMap(m protoreflect.Message, fd protoreflect.FieldDescriptor, depth int) {
	mp := m.Mutable(fd).Map()
	for n := g.c.intn(4); n > 0; n-- {
		k := g.scalar(fd.MapKey(), fd).MapKey()
		if fd.MapValue().Kind() != protoreflect.MessageKind {
			mp.Set(k, g.scalar(fd.MapValue(), fd))
			continue
		}
		if depth >= 5 {
			return
		}
		v := mp.NewValue()
		for k := g.c.intn(4); k > 0; k-- {
			g.change(v.Message(), depth+1)
		}
		mp.Set(k, v)
	}
}

// scalar is a value of fd's kind; owner (the field itself, or the map or
// list holding it) names what the value is for.
func (g *generator) scalar(fd, owner protoreflect.FieldDescriptor) protoreflect.Value {
	name := string(owner.Name())
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(g.c.byte()&1 == 1)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		b := g.c.byte()
		if b == 255 {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(100 + int32(g.c.byte()))) // undefined
		}
		return protoreflect.ValueOfEnum(vals.Get(int(b) % vals.Len()).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(g.integer(name)))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(g.integer(name))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(g.integer(name)))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(g.integer(name)))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(g.integer(name)) / 3)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(g.integer(name)) / 3)
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(bytes.Clone(g.c.bytes(g.c.intn(64))))
	default:
		return protoreflect.ValueOfString(g.str(owner))
	}
}

var interesting = []int64{0, 1, -1, 2, 3, 100, 1000, 4096, 1 << 20, 1 << 30, math.MaxInt32, math.MinInt32, math.MaxInt64, math.MinInt64}

// integer is small for timeouts (a call must not wait long), a port-like
// value for ports, else an interesting value or 8 bytes of the input.
func (g *generator) integer(name string) int64 {
	switch {
	case strings.Contains(name, "timeout") || strings.Contains(name, "grace"):
		return int64(g.c.intn(3))
	case strings.Contains(name, "port"):
		return []int64{0, 80, 8080, -1, 65535, 65536, 70000}[g.c.intn(7)]
	}
	b := g.c.byte()
	if b == 255 {
		var v int64
		for _, x := range g.c.bytes(8) {
			v = v<<8 | int64(x)
		}
		return v
	}
	return interesting[int(b)%len(interesting)]
}

// str is a string for the field: a token of its kind (paths, IDs,
// commands...), or, for fields whose value reaches no path or process, a
// general token or bytes of the input. Commands are never input bytes.
func (g *generator) str(owner protoreflect.FieldDescriptor) string {
	name := string(owner.Name())
	msg := string(owner.ContainingMessage().Name())
	kind := "general"
	switch {
	case name == "pod_sandbox_id" || name == "container_id" || name == "id" || name == "target_id":
		return g.id()
	case msg == "Device" && (name == "host_path" || name == "container_path"):
		kind = "device"
	case msg == "SecurityProfile" || strings.Contains(name, "profile"):
		kind = "profile"
	case name == "image" || name == "user_specified_image" || name == "image_ref":
		kind = "image"
	case name == "runtime_handler" || name == "handler":
		kind = "handler"
	case name == "working_dir" || name == "masked_paths" || name == "readonly_paths" || name == "image_sub_path":
		kind = "container_path"
	case name == "cmd" || name == "args":
		kind = "command"
	case strings.Contains(name, "capabilities"):
		kind = "capabilities"
	default:
		if _, ok := g.tokens[name]; ok {
			kind = name
		}
	}
	toks := g.tokens[kind]
	b := g.c.byte()
	if kind != "general" || b < 200 {
		return toks[int(b)%len(toks)]
	}
	return strings.ToValidUTF8(string(g.c.bytes(g.c.intn(40))), "?")
}

// id is an ID of the pool (whole or a prefix) or a token.
func (g *generator) id() string {
	var ids []string
	ids = append(ids, g.pool.pods...)
	ids = append(ids, g.pool.containers...)
	ids = append(ids, g.pool.images...)
	b := int(g.c.byte())
	if len(ids) > 0 && b < 200 {
		id := ids[b%len(ids)]
		if b%3 == 2 {
			return strings.TrimPrefix(id, "sha256:")[:12]
		}
		return id
	}
	return g.tokens["id"][b%len(g.tokens["id"])]
}

// busyboxImage is the host's static busybox as an image: sh and a few
// applets, a passwd and a group.
func busyboxImage() (v1.Image, error) {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body []byte) {
		h.Size = int64(len(body))
		_ = tw.WriteHeader(h)
		_, _ = tw.Write(body)
	}
	for _, d := range []string{"bin/", "etc/", "tmp/", "mnt/"} {
		add(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	}
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755}, bb)
	for _, a := range []string{"sh", "sleep", "echo", "true", "false", "id", "ls", "cat"} {
		add(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox"}, nil)
	}
	add(&tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n"))
	add(&tar.Header{Name: "etc/group", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("root:x:0:\napp:x:1000:\n"))
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	return mutate.Config(img, v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/bin"}})
}

// seedOps encodes calls of the named methods with their templates
// unchanged: the method's index, a 0 (the latest object), a 0 (no
// change).
func seedOps(names ...string) []byte {
	var b []byte
	for _, n := range names {
		b = append(b, byte(methodIndex(n)), 0, 0)
	}
	return b
}

func methodIndex(name string) int {
	for i, m := range criMethods {
		if m.name == name {
			return i
		}
	}
	panic("no CRI method " + name)
}

// everyRPC is a pod's life through every method of both services.
var everyRPC = []string{"Version", "Status", "RuntimeConfig", "UpdateRuntimeConfig", "ListMetricDescriptors",
	"PullImage", "ListImages", "StreamImages", "ImageStatus", "ImageFsInfo",
	"RunPodSandbox", "PodSandboxStatus", "ListPodSandbox", "StreamPodSandboxes", "UpdatePodSandboxResources",
	"CreateContainer", "StartContainer", "ContainerStatus", "ListContainers", "StreamContainers",
	"ExecSync", "Exec", "Attach", "PortForward", "ContainerStats", "ListContainerStats", "StreamContainerStats",
	"PodSandboxStats", "ListPodSandboxStats", "StreamPodSandboxStats", "ListPodSandboxMetrics", "StreamPodSandboxMetrics",
	"UpdateContainerResources", "ReopenContainerLog", "CheckpointContainer", "CheckpointPod", "RestorePod",
	"GetContainerEvents", "StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox", "RemoveImage"}

// seedOp encodes one call of method on its template, with changes.
func seedOp(method string, changes ...[]byte) []byte {
	b := []byte{byte(methodIndex(method)), 0, byte(len(changes))}
	for _, c := range changes {
		b = append(b, c...)
	}
	return b
}

// change encodes a change of the field at path (field names from msg
// down), followed by the bytes of the new value.
func change(msg proto.Message, path []string, value ...byte) []byte {
	d := msg.ProtoReflect().Descriptor()
	var b []byte
	for i, name := range path {
		fd := d.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			panic(fmt.Sprintf("%s has no field %s", d.FullName(), name))
		}
		b = append(b, byte(fd.Index()), 0)
		if i < len(path)-1 {
			d = fd.Message()
		}
	}
	return append(b, value...)
}

// token is the byte that picks the token of kind ending in suffix.
func token(kind, suffix string) byte {
	for i, t := range newGenerator("/node", "/cgroup").tokens[kind] {
		if strings.HasSuffix(t, suffix) {
			return byte(i)
		}
	}
	panic("no " + kind + " token ending in " + suffix)
}

// fuzzSeeds: every RPC once in a pod's life; two pods with containers
// removed out of order; a started container followed by bytes for the
// fuzzer to turn into calls; and the path-like fields of pods and
// containers set to what tries to leave huskd's dirs, one at a time.
func fuzzSeeds() [][]byte {
	tail := make([]byte, 96)
	for i := range tail {
		tail[i] = byte(i*73 + 11)
	}
	ctr, pod := &runtimeapi.CreateContainerRequest{}, &runtimeapi.RunPodSandboxRequest{}
	mount := &runtimeapi.Mount{}
	escape := token("general", "/tmp/"+canary)
	seeds := [][]byte{
		seedOps(everyRPC...),
		seedOps("RunPodSandbox", "CreateContainer", "RunPodSandbox", "CreateContainer", "StartContainer",
			"StopPodSandbox", "RemoveContainer", "ExecSync", "RemovePodSandbox", "ListContainers"),
		append(seedOps("RunPodSandbox", "CreateContainer", "StartContainer"), tail...),
	}
	for _, c := range [][]byte{
		change(ctr, []string{"config", "log_path"}, token("log_path", "/tmp/"+canary)),
		change(ctr, []string{"config", "log_path"}, token("log_path", "c/../../"+canary)),
		change(ctr, []string{"config", "metadata", "name"}, escape),
		change(ctr, []string{"config", "working_dir"}, token("container_path", "/mnt/../../"+canary)),
		change(ctr, []string{"config", "mounts"}, 1, 2,
			change(mount, []string{"host_path"}, token("host_path", "missing"))[0], 0, token("host_path", "missing"),
			change(mount, []string{"container_path"})[0], 0, token("container_path", "/mnt/../../"+canary)),
	} {
		seeds = append(seeds, append(seedOps("RunPodSandbox"), append(seedOp("CreateContainer", c), seedOps("StartContainer", "ExecSync")...)...))
	}
	for _, c := range [][]byte{
		change(pod, []string{"config", "metadata", "name"}, escape),
		change(pod, []string{"config", "metadata", "uid"}, escape),
		change(pod, []string{"config", "log_directory"}, token("log_directory", "relative/logs")),
		change(pod, []string{"config", "linux", "cgroup_parent"}, token("cgroup_parent", "../"+canary)),
		change(pod, []string{"config", "hostname"}, escape),
	} {
		seeds = append(seeds, append(seedOp("RunPodSandbox", c), seedOps("CreateContainer", "StartContainer")...))
	}
	return seeds
}
