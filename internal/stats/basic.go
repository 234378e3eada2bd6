package stats

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3"
)

// The Basic reads are what the kubelet polls for every container and pod
// (ContainerStats, PodSandboxStats and their lists): they read only the
// files the CRI messages need, one after the other in the calling
// goroutine, with one pread each on files kept open (rawfile.go).
// containerd/cgroups opens every file of each controller it is given, in a
// goroutine per controller, through os.ReadFile; on this 2-core node that
// cost three times as much per cgroup even before keeping files open, and
// a node of 110 pods reads 220 cgroups per ListPodSandboxStats. Full reads,
// for the metrics, still go through the library.

// bufs holds the read buffers of Basic reads: 8 KiB holds memory.stat.
var bufs = sync.Pool{New: func() any { b := make([]byte, 8<<10); return &b }}

// readBasic reads the Basic figures of group, swap only if asked. On a
// node without swap space the swap files are not read: nothing can be
// swapped out, so usage and availability are 0 (swapDevices).
func (r *Reader) readBasic(group string, swap bool) (*Cgroup, error) {
	buf := bufs.Get().(*[]byte)
	defer bufs.Put(buf)
	g := r.files.acquire(group)
	rd := &reader{g: g, buf: *buf}
	c, err := r.readBasicWith(rd, group, swap)
	g.release()
	if rd.gone || errors.Is(err, os.ErrNotExist) {
		r.files.forget(group)
	}
	return c, err
}

func (r *Reader) readBasicWith(rd *reader, group string, swap bool) (*Cgroup, error) {
	want := swapNone
	if swap {
		want = swapRead
		if !r.swap.any(r.Proc) {
			want = swapZero
		}
	}
	if r.Mode == cgroups.Unified {
		return r.readBasicV2(rd, filepath.Join(r.Root, group), want)
	}
	return r.readBasicV1(rd, group, want)
}

// swapWant is what a Basic read does about swap.
type swapWant int

const (
	swapNone swapWant = iota // not asked for
	swapZero                 // asked for, the node has no swap space
	swapRead                 // read from the cgroup
)

// readBasicV1: memory.stat, usage and limit (with memsw when swap is
// accounted), cpuacct.usage, pids.current, and pressure from the unified
// hierarchy of a hybrid layout.
func (r *Reader) readBasicV1(rd *reader, group string, swap swapWant) (*Cgroup, error) {
	c := &Cgroup{Timestamp: time.Now()}
	if err := r.readMemoryV1(rd, filepath.Join(r.Root, "memory", group), swap, c); err != nil {
		return nil, err
	}
	// The other controllers may lack the group (a runtime that skipped
	// one): their figures stay 0, as the library's IgnoreNotExist does.
	c.CPU.UsageNanos, _ = readUint(rd, filepath.Join(r.Root, "cpuacct", group, "cpuacct.usage"))
	c.Pids.Current, _ = readUint(rd, filepath.Join(r.Root, "pids", group, "pids.current"))
	if r.Mode == cgroups.Hybrid && r.Unified != "" {
		u := filepath.Join(r.Unified, group)
		c.CPU.PSI, c.Memory.PSI, c.IO.PSI = readPSIIn(rd, u, "cpu.pressure"), readPSIIn(rd, u, "memory.pressure"), readPSIIn(rd, u, "io.pressure")
	}
	return c, nil
}

func (r *Reader) readMemoryV1(rd *reader, dir string, swap swapWant, c *Cgroup) error {
	b, err := rd.read(dir + "/memory.stat")
	if err != nil {
		return err
	}
	m := &c.Memory
	scanKV(b, func(k []byte, v uint64) {
		switch string(k) {
		case "total_rss":
			m.RSS = v
		case "total_pgfault":
			m.PageFaults = v
		case "total_pgmajfault":
			m.MajorPageFaults = v
		case "total_cache":
			m.Cache = v
		case "total_mapped_file":
			m.MappedFile = v
		case "total_active_file":
			m.ActiveFile = v
		case "total_inactive_file":
			m.InactiveFile = v
		}
	})
	var limit uint64
	if m.Usage, err = readUint(rd, dir+"/memory.usage_in_bytes"); err != nil {
		return err
	}
	if limit, err = readUint(rd, dir+"/memory.limit_in_bytes"); err != nil {
		return err
	}
	m.WorkingSet = workingSet(m.Usage, m.InactiveFile)
	if limit < v1Unlimited {
		m.Limit = limit
	}
	if swap == swapNone || !r.swapAccounted() {
		return nil
	}
	if swap == swapZero {
		c.Swap = &Swap{}
		return nil
	}
	usage, err1 := readUint(rd, dir+"/memory.memsw.usage_in_bytes")
	swapLimit, err2 := readUint(rd, dir+"/memory.memsw.limit_in_bytes")
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	c.Swap = &Swap{}
	if usage > m.Usage {
		c.Swap.Usage = usage - m.Usage
	}
	if swapLimit < v1Unlimited && m.Limit != 0 && swapLimit > m.Limit {
		c.Swap.Limit = swapLimit - m.Limit
	}
	return nil
}

// readBasicV2: cpu.stat, memory.stat, memory.current, memory.max, the swap
// files where the kernel has them, pids.current and the pressure files.
func (r *Reader) readBasicV2(rd *reader, dir string, swap swapWant) (*Cgroup, error) {
	c := &Cgroup{Timestamp: time.Now()}
	b, err := rd.read(dir + "/cpu.stat")
	if err != nil {
		return nil, err
	}
	scanKV(b, func(k []byte, v uint64) {
		switch string(k) {
		case "usage_usec":
			c.CPU.UsageNanos = v * 1000
		case "user_usec":
			c.CPU.UserNanos = v * 1000
		case "system_usec":
			c.CPU.SystemNanos = v * 1000
		}
	})
	c.CPU.PSI = readPSIIn(rd, dir, "cpu.pressure")
	// Without the memory controller (a parent that does not delegate it)
	// the memory figures stay 0, as the library reports them.
	if b, err := rd.read(dir + "/memory.stat"); err == nil {
		m := &c.Memory
		scanKV(b, func(k []byte, v uint64) {
			switch string(k) {
			case "anon":
				m.RSS = v
			case "pgfault":
				m.PageFaults = v
			case "pgmajfault":
				m.MajorPageFaults = v
			case "file":
				m.Cache = v
			case "file_mapped":
				m.MappedFile = v
			case "active_file":
				m.ActiveFile = v
			case "inactive_file":
				m.InactiveFile = v
			}
		})
		m.Usage, _ = readUint(rd, dir+"/memory.current")
		m.WorkingSet = workingSet(m.Usage, m.InactiveFile)
		m.Limit, _ = readUint(rd, dir+"/memory.max")
		m.PSI = readPSIIn(rd, dir, "memory.pressure")
		switch swap {
		case swapRead:
			if usage, err := readUint(rd, dir+"/memory.swap.current"); err == nil {
				swapLimit, _ := readUint(rd, dir+"/memory.swap.max")
				c.Swap = &Swap{Usage: usage, Limit: swapLimit}
			}
		case swapZero:
			c.Swap = &Swap{}
		}
	}
	c.Pids.Current, _ = readUint(rd, dir+"/pids.current")
	c.IO.PSI = readPSIIn(rd, dir, "io.pressure")
	return c, nil
}

// readUint reads a file holding one number, or "max", which is 0: no
// limit.
func readUint(rd *reader, path string) (uint64, error) {
	b, err := rd.read(path)
	if err != nil {
		return 0, err
	}
	b = bytes.TrimSpace(b)
	if string(b) == "max" {
		return 0, nil
	}
	v, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// readPSIIn reads a pressure file of dir; nil when it is absent or
// unreadable (see readPSI).
func readPSIIn(rd *reader, dir, name string) *PSI {
	b, err := rd.read(dir + "/" + name)
	if err != nil {
		return nil
	}
	p, err := parsePSI(b)
	if err != nil {
		return nil
	}
	return p
}

// scanKV calls f for each "key number" line of a file such as memory.stat
// or cpu.stat; other lines are skipped.
func scanKV(b []byte, f func(key []byte, v uint64)) {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		k, v, ok := bytes.Cut(line, []byte{' '})
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(string(v), 10, 64); err == nil {
			f(k, n)
		}
	}
}
