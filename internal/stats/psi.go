package stats

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// readPSI reads a pressure file of dir ("cpu.pressure", ...); nil when the
// file is absent or unreadable (a kernel without PSI, psi=0, a cgroup
// removed meanwhile): pressure is optional in every CRI message.
func readPSI(dir, file string) *PSI {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return nil
	}
	p, err := parsePSI(b)
	if err != nil {
		return nil
	}
	return p
}

// parsePSI parses the kernel's pressure format, one line each for "some"
// and "full":
//
//	some avg10=0.00 avg60=0.00 avg300=0.00 total=0
//
// total is in microseconds. It walks the bytes in place: ListPodSandboxStats
// parses three of these per cgroup, and a bufio.Scanner's 4 KiB buffer per
// file was most of what that call allocated (TestParsePSIAllocations).
func parsePSI(b []byte) (*PSI, error) {
	p := &PSI{}
	seen := false
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		kind, rest, _ := bytes.Cut(line, []byte{' '})
		var d *PSIData
		switch string(kind) {
		case "some":
			d = &p.Some
		case "full":
			d = &p.Full
		case "":
			continue
		default:
			return nil, fmt.Errorf("pressure line %q: unknown kind", line)
		}
		if err := parsePSIFields(rest, d); err != nil {
			return nil, err
		}
		seen = true
	}
	if !seen {
		return nil, fmt.Errorf("no pressure line")
	}
	return p, nil
}

// parsePSIFields parses the "key=value" fields of one pressure line.
func parsePSIFields(rest []byte, d *PSIData) error {
	for field := range bytes.FieldsSeq(rest) {
		k, v, ok := bytes.Cut(field, []byte{'='})
		if !ok {
			return fmt.Errorf("pressure field %q: no value", field)
		}
		var err error
		switch string(k) {
		case "avg10":
			d.Avg10, err = strconv.ParseFloat(string(v), 64)
		case "avg60":
			d.Avg60, err = strconv.ParseFloat(string(v), 64)
		case "avg300":
			d.Avg300, err = strconv.ParseFloat(string(v), 64)
		case "total":
			var us uint64
			us, err = strconv.ParseUint(string(v), 10, 64)
			d.TotalNanos = us * 1000
		}
		if err != nil {
			return fmt.Errorf("pressure field %q: %w", field, err)
		}
	}
	return nil
}
