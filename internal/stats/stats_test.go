package stats

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"

	"github.com/huskrt/husk/internal/testutil"
)

func TestParseNetDev(t *testing.T) {
	const header = "Inter-|   Receive                                                |  Transmit\n" +
		" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
	tests := []struct {
		name    string
		in      string
		want    []Interface
		wantErr bool
	}{
		{
			name: "typical",
			in: header +
				"    lo:    1296      16    0    0    0     0          0         0     1296      16    0    0    0     0       0          0\n" +
				"  eth0: 9876543   12345    3    1    0     0          0         7  1234567    6789    2    0    0     0       0          0\n",
			want: []Interface{
				{Name: "lo", RxBytes: 1296, RxPackets: 16, TxBytes: 1296, TxPackets: 16},
				{Name: "eth0", RxBytes: 9876543, RxPackets: 12345, RxErrors: 3, RxDropped: 1, TxBytes: 1234567, TxPackets: 6789, TxErrors: 2},
			},
		},
		{
			// Old kernels print wide counters with no space after ':'.
			name: "no space after colon",
			in:   header + "eth1:18446744073709551615 1 2 3 4 5 6 7 42 9 10 11 12 13 14 15\n",
			want: []Interface{{Name: "eth1", RxBytes: 18446744073709551615, RxPackets: 1, RxErrors: 2, RxDropped: 3, TxBytes: 42, TxPackets: 9, TxErrors: 10, TxDropped: 11}},
		},
		{
			name: "pipe in interface name",
			in:   header + "a|b: 1 0 0 0 0 0 0 0 2 0 0 0 0 0 0 0\n",
			want: []Interface{{Name: "a|b", RxBytes: 1, TxBytes: 2}},
		},
		{
			name: "header only",
			in:   header,
			want: nil,
		},
		{
			name:    "too few counters",
			in:      header + "eth0: 1 2 3\n",
			wantErr: true,
		},
		{
			name:    "not a number",
			in:      header + "eth0: 1 0 x 0 0 0 0 0 2 0 0 0 0 0 0 0\n",
			wantErr: true,
		},
		{
			name:    "no name",
			in:      header + "  : 1 0 0 0 0 0 0 0 2 0 0 0 0 0 0 0\n",
			wantErr: true,
		},
		{
			name:    "garbage line",
			in:      header + "garbage\n",
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseNetDev([]byte(tt.in))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseNetDev: got %+v, want error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseNetDev: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseNetDev:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestExpandSlice(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "system.slice", want: "/system.slice"},
		{in: "kubepods.slice", want: "/kubepods.slice"},
		{in: "kubepods-burstable.slice", want: "/kubepods.slice/kubepods-burstable.slice"},
		{in: "kubepods-burstable-pod1234.slice", want: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice"},
		{in: "-.slice", want: "/"},
		{in: ".slice", wantErr: true},
		{in: "system", wantErr: true},
		{in: "a--b.slice", wantErr: true},
		{in: "-a.slice", wantErr: true},
		{in: "a-.slice", wantErr: true},
		{in: "a/b.slice", wantErr: true},
	}
	for _, tt := range tests {
		got, err := expandSlice(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("expandSlice(%q) = %q, want error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("expandSlice(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestGroupPath(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "/husk-test/abc123", want: "/husk-test/abc123"},
		{in: "/husk-test//abc123/", want: "/husk-test/abc123"},
		{in: "/../../etc", want: "/etc"},
		{in: "system.slice:husk:abc", want: "/system.slice/husk-abc.scope"},
		{in: ":husk:abc", want: "/system.slice/husk-abc.scope"},
		{in: "kubepods-burstable.slice:husk:abc", want: "/kubepods.slice/kubepods-burstable.slice/husk-abc.scope"},
		{in: "kubepods-besteffort-pod1.slice:cri-husk:0123abcd", want: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-husk-0123abcd.scope"},
		{in: "kubepods.slice::abc", want: "/kubepods.slice/abc.scope"},
		{in: "kubepods-burstable.slice:husk:kubepods-burstable-pod1.slice", want: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"},
		{in: "kubepods-burstable-pod1.slice", want: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"},
		{in: "", wantErr: true},
		{in: "relative/path", wantErr: true},
		{in: "a--b.slice", wantErr: true},
		{in: "system.slice:husk:", wantErr: true},
		{in: "system.slice:husk:a/b", wantErr: true},
		{in: "notaslice:husk:abc", wantErr: true},
		{in: "a--b.slice:husk:abc", wantErr: true},
	}
	for _, tt := range tests {
		got, err := groupPath(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("groupPath(%q) = %q, want error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("groupPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestWorkingSetAndAvailable(t *testing.T) {
	if got := workingSet(100, 30); got != 70 {
		t.Errorf("workingSet(100, 30) = %d, want 70", got)
	}
	if got := workingSet(10, 30); got != 0 {
		t.Errorf("workingSet(10, 30) = %d, want 0", got)
	}
	for _, tt := range []struct{ limit, ws, want uint64 }{{100, 70, 30}, {50, 70, 0}, {0, 70, 0}} {
		if got := (Memory{Limit: tt.limit, WorkingSet: tt.ws}).Available(); got != tt.want {
			t.Errorf("Memory{Limit: %d, WorkingSet: %d}.Available() = %d, want %d", tt.limit, tt.ws, got, tt.want)
		}
	}
	for _, tt := range []struct{ limit, usage, want uint64 }{{100, 70, 30}, {50, 70, 0}, {0, 70, 0}} {
		if got := (Swap{Limit: tt.limit, Usage: tt.usage}).Available(); got != tt.want {
			t.Errorf("Swap{Limit: %d, Usage: %d}.Available() = %d, want %d", tt.limit, tt.usage, got, tt.want)
		}
	}
}

func TestReadCgroupNotExist(t *testing.T) {
	testutil.RequiresKernel(t, "a mounted cgroup hierarchy")
	if cgroups.Mode() == cgroups.Unavailable {
		testutil.Missing(t, "needs a mounted cgroup hierarchy")
	}
	for _, p := range []string{"/husk-stats-test-does-not-exist", "system.slice:husk:does-not-exist"} {
		_, err := ReadCgroup(p)
		t.Log(err)
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("ReadCgroup(%q) error = %v, want os.ErrNotExist", p, err)
		}
	}
}

func TestReadNetworkNotExist(t *testing.T) {
	_, err := ReadNetwork(filepath.Join(t.TempDir(), "no-such-netns"))
	t.Log(err)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadNetwork error = %v, want os.ErrNotExist", err)
	}
}

func TestCPURates(t *testing.T) {
	var r CPURates
	t0 := time.Unix(1000, 0)
	steps := []struct {
		id     string
		usage  uint64
		at     time.Time
		want   uint64
		wantOK bool
	}{
		{"a", 1e9, t0, 0, false},                       // first sample
		{"a", 3e9, t0.Add(4 * time.Second), 5e8, true}, // 2 s of CPU in 4 s: half a core
		{"a", 3e9, t0.Add(3 * time.Second), 0, false},  // older than the last: ignored
		{"a", 7e9, t0.Add(6 * time.Second), 2e9, true}, // 4 s in 2 s: two cores
		{"a", 1e9, t0.Add(7 * time.Second), 0, false},  // counter reset: a new cgroup
		{"a", 2e9, t0.Add(8 * time.Second), 1e9, true}, // from the reset on
		{"b", 5e9, t0.Add(8 * time.Second), 0, false},  // another object
		{"b", 5e9, t0.Add(18 * time.Minute), 0, false}, // forgotten after the TTL? no: b itself was seen
	}
	for i, s := range steps {
		got, ok := r.NanoCores(s.id, s.usage, s.at)
		if got != s.want || ok != s.wantOK {
			t.Errorf("step %d: NanoCores(%s, %d) = %d, %v; want %d, %v", i, s.id, s.usage, got, ok, s.want, s.wantOK)
		}
	}
	if _, ok := r.last["a"]; ok {
		t.Error("a, not seen for 18 minutes, is still kept")
	}
	r.Forget("b")
	if _, ok := r.NanoCores("b", 6e9, t0.Add(19*time.Minute)); ok {
		t.Error("a forgotten object has a rate")
	}
}
