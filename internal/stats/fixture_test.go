package stats

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
)

// The trees under testdata are cgroupfs layouts with files in the kernel's
// exact formats: cgroup2/ a unified hierarchy (a limited cgroup with swap,
// IO, pressure and memory.events; a bare one as on a kernel with psi=0 and
// no swap accounting), cgroup1/ v1 controllers with the unified hierarchy
// of a hybrid layout holding only pressure files, as runc leaves it. This
// machine is v1 hybrid: the v2 paths run only against these fixtures.

var (
	fixturePSICPU = &PSI{Some: PSIData{TotalNanos: 123456000, Avg10: 1.5, Avg60: 0.75, Avg300: 0.2}}
	fixturePSIMem = &PSI{Some: PSIData{TotalNanos: 2000000, Avg60: 0.1, Avg300: 0.02}, Full: PSIData{TotalNanos: 1000000, Avg60: 0.05, Avg300: 0.01}}
	fixturePSIIO  = &PSI{Some: PSIData{TotalNanos: 9000000000, Avg10: 3, Avg60: 2, Avg300: 1}, Full: PSIData{TotalNanos: 7000000000, Avg10: 2.5, Avg60: 1.5, Avg300: 0.5}}
	// fixtureMemory is the memory of both "limited" fixtures, v1 and v2.
	fixtureMemory = Memory{
		Usage: 15728640, WorkingSet: 15728640 - 3145728, RSS: 10485760, Limit: 64 << 20,
		PageFaults: 4321, MajorPageFaults: 12, Cache: 4 << 20, MappedFile: 1 << 20, ActiveFile: 1 << 20, InactiveFile: 3 << 20,
		MaxUsage: 16 << 20, OOMKills: 1, PSI: fixturePSIMem,
	}
	fixtureSda = IODevice{Major: 8, Minor: 0, Name: "/dev/sda", ReadBytes: 1459200, WriteBytes: 314773504, Reads: 192, Writes: 353}
)

func v2Fixture() *Reader {
	return &Reader{Mode: cgroups.Unified, Root: "testdata/cgroup2", Proc: "testdata"}
}

func v1Fixture(mode cgroups.CGMode) *Reader {
	return &Reader{Mode: mode, Root: "testdata/cgroup1", Unified: "testdata/cgroup1/unified", Proc: "testdata"}
}

func TestReadFixtures(t *testing.T) {
	v2Full := Cgroup{
		CPU: CPU{UsageNanos: 2.5e9, UserNanos: 1.8e9, SystemNanos: 0.7e9, Periods: 40, ThrottledPeriods: 7, ThrottledNanos: 350e6,
			PSI: fixturePSICPU},
		Memory: fixtureMemory,
		Swap:   &Swap{Usage: 2 << 20, Limit: 32 << 20},
		IO: IO{PSI: fixturePSIIO, Devices: []IODevice{fixtureSda,
			{Major: 253, Minor: 3, ReadBytes: 4096, Reads: 1}}}, // not in partitions: no name
		Pids: Pids{Current: 3, Limit: 1024},
	}
	// Basic leaves out what only the metrics report: throttling,
	// memory.peak, memory.events, io.stat and pids.max are not read.
	v2Basic := v2Full
	v2Basic.CPU.Periods, v2Basic.CPU.ThrottledPeriods, v2Basic.CPU.ThrottledNanos = 0, 0, 0
	v2Basic.Memory.MaxUsage, v2Basic.Memory.OOMKills = 0, 0
	v2Basic.IO.Devices = nil
	v2Basic.Pids.Limit = 0

	v1Full := Cgroup{
		CPU: CPU{UsageNanos: 2.5e9, UserNanos: 1.8e9, SystemNanos: 0.7e9, Periods: 40, ThrottledPeriods: 7, ThrottledNanos: 350e6,
			PSI: fixturePSICPU},
		Memory: fixtureMemory,
		// memsw minus memory: 17 MiB - 15 MiB used, 96 MiB - 64 MiB limit.
		Swap: &Swap{Usage: 2 << 20, Limit: 32 << 20},
		IO:   IO{PSI: fixturePSIIO, Devices: []IODevice{fixtureSda}},
		Pids: Pids{Current: 3},
	}
	v1Full.Memory.Failcnt = 9
	v1Basic := v1Full
	v1Basic.CPU = CPU{UsageNanos: v1Full.CPU.UsageNanos, PSI: v1Full.CPU.PSI}
	v1Basic.Memory.MaxUsage, v1Basic.Memory.Failcnt, v1Basic.Memory.OOMKills = 0, 0, 0
	v1Basic.IO.Devices = nil
	// Legacy: no unified hierarchy, no pressure.
	v1Legacy := v1Basic
	v1Legacy.CPU.PSI, v1Legacy.Memory.PSI, v1Legacy.IO.PSI = nil, nil, nil

	v2Bare := Cgroup{
		CPU:    CPU{UsageNanos: 1e6, UserNanos: 6e5, SystemNanos: 4e5},
		Memory: Memory{Usage: 4096, RSS: 4096, PageFaults: 10, InactiveFile: 8192}, // working set floored at 0
		Pids:   Pids{Current: 1},
	}
	// A node without swap space: the swap files are not read, and nothing
	// can be swapped out. The pod detail carries no swap at all.
	v2NoSwap, v1NoSwap, v1Pod := v2Basic, v1Basic, v1Basic
	v2NoSwap.Swap, v1NoSwap.Swap, v1Pod.Swap = &Swap{}, &Swap{}, nil
	noSwap := func(r *Reader) *Reader { r.Proc = "testdata/noswap"; return r }
	tests := []struct {
		name   string
		reader *Reader
		path   string
		detail Detail
		want   Cgroup
	}{
		{"v2 full", v2Fixture(), "/kubepods/podA/limited", Full, v2Full},
		{"v2 basic", v2Fixture(), "/kubepods/podA/limited", Basic, v2Basic},
		{"v2 systemd path", v2Fixture(), "kubepods.slice:husk:x", Basic, Cgroup{}}, // not there: checked below
		{"v2 without psi and swap", v2Fixture(), "/kubepods/podA/bare", Full, v2Bare},
		{"v2 basic without psi and swap", v2Fixture(), "/kubepods/podA/bare", Basic, v2Bare},
		{"v1 hybrid full", v1Fixture(cgroups.Hybrid), "/kubepods/podA/c1", Full, v1Full},
		{"v1 hybrid basic", v1Fixture(cgroups.Hybrid), "/kubepods/podA/c1", Basic, v1Basic},
		{"v1 legacy", v1Fixture(cgroups.Legacy), "/kubepods/podA/c1", Basic, v1Legacy},
		{"v2 basic, no swap space", noSwap(v2Fixture()), "/kubepods/podA/limited", Basic, v2NoSwap},
		{"v1 basic, no swap space", noSwap(v1Fixture(cgroups.Hybrid)), "/kubepods/podA/c1", Basic, v1NoSwap},
		{"v1 pod", v1Fixture(cgroups.Hybrid), "/kubepods/podA/c1", Pod, v1Pod},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.reader.Read(tt.path, tt.detail)
			if strings.Contains(tt.path, ":") {
				if !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("Read(%q) = %+v, %v; want os.ErrNotExist", tt.path, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Read(%q): %v", tt.path, err)
			}
			if got.Timestamp.IsZero() {
				t.Error("Timestamp is zero")
			}
			got.Timestamp = tt.want.Timestamp
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("Read(%q, %v):\n got %s\nwant %s", tt.path, tt.detail, dump(got), dump(&tt.want))
			}
		})
	}
}

func TestReadFixtureNotExist(t *testing.T) {
	for _, r := range []*Reader{v2Fixture(), v1Fixture(cgroups.Hybrid)} {
		for _, d := range []Detail{Basic, Full} {
			_, err := r.Read("/kubepods/podA/gone", d)
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("mode %v detail %v: Read(gone) error = %v, want os.ErrNotExist", r.Mode, d, err)
			}
		}
	}
}

func TestParsePSI(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    *PSI
		wantErr bool
	}{
		{
			name: "some and full",
			in:   "some avg10=0.12 avg60=3.40 avg300=56.78 total=1000001\nfull avg10=0.00 avg60=0.01 avg300=0.02 total=5\n",
			want: &PSI{Some: PSIData{TotalNanos: 1000001000, Avg10: 0.12, Avg60: 3.4, Avg300: 56.78}, Full: PSIData{TotalNanos: 5000, Avg60: 0.01, Avg300: 0.02}},
		},
		{
			// The CPU file of old kernels has no "full" line.
			name: "some only",
			in:   "some avg10=1.00 avg60=0.00 avg300=0.00 total=7\n",
			want: &PSI{Some: PSIData{TotalNanos: 7000, Avg10: 1}},
		},
		{name: "empty", in: "", wantErr: true},
		{name: "unknown kind", in: "most avg10=0.00 total=1\n", wantErr: true},
		{name: "bad number", in: "some avg10=x avg60=0.00 avg300=0.00 total=1\n", wantErr: true},
		{name: "bad total", in: "some avg10=0.00 avg60=0.00 avg300=0.00 total=-1\n", wantErr: true},
		{name: "no value", in: "some avg10\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePSI([]byte(tt.in))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parsePSI(%q) = %+v, want error", tt.in, got)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parsePSI(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestDeviceNames(t *testing.T) {
	var d deviceNames
	for _, tt := range []struct {
		major, minor uint64
		want         string
	}{{8, 0, "/dev/sda"}, {253, 0, "/dev/dm-0"}, {253, 3, ""}, {8, 0, "/dev/sda"}} {
		if got := d.name("testdata", tt.major, tt.minor); got != tt.want {
			t.Errorf("name(%d:%d) = %q, want %q", tt.major, tt.minor, got, tt.want)
		}
	}
}

// dump shows a snapshot with what its pointers point to.
func dump(c *Cgroup) string {
	return fmt.Sprintf("%+v\n  swap %+v cpu psi %+v memory psi %+v io psi %+v", *c, c.Swap, c.CPU.PSI, c.Memory.PSI, c.IO.PSI)
}

// TestParsePSIAllocations: parsing a pressure file allocates only the
// result (a bufio.Scanner allocated 4 KiB per file, three files per cgroup
// on every stats call).
func TestParsePSIAllocations(t *testing.T) {
	in := []byte("some avg10=0.12 avg60=3.40 avg300=56.78 total=1000001\nfull avg10=0.00 avg60=0.01 avg300=0.02 total=5\n")
	if n := testing.AllocsPerRun(100, func() {
		if _, err := parsePSI(in); err != nil {
			t.Fatal(err)
		}
	}); n > 1 {
		t.Errorf("parsePSI allocates %v times per file, want 1 (the result)", n)
	}
}
