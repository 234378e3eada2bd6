module github.com/huskrt/husk

go 1.26.0

require github.com/pelletier/go-toml/v2 v2.4.3

require (
	github.com/containerd/errdefs v1.0.0 // indirect
	github.com/containernetworking/cni v1.2.3 // indirect
	github.com/opencontainers/runtime-spec v1.3.0 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/grpc v1.85.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
	k8s.io/cri-api v0.36.6 // indirect
)
