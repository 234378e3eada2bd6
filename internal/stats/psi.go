package stats

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
// total is in microseconds.
func parsePSI(b []byte) (*PSI, error) {
	p := &PSI{}
	seen := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		kind, rest, _ := strings.Cut(sc.Text(), " ")
		var d *PSIData
		switch kind {
		case "some":
			d = &p.Some
		case "full":
			d = &p.Full
		case "":
			continue
		default:
			return nil, fmt.Errorf("pressure line %q: unknown kind", sc.Text())
		}
		for field := range strings.FieldsSeq(rest) {
			k, v, ok := strings.Cut(field, "=")
			if !ok {
				return nil, fmt.Errorf("pressure field %q: no value", field)
			}
			var err error
			switch k {
			case "avg10":
				d.Avg10, err = strconv.ParseFloat(v, 64)
			case "avg60":
				d.Avg60, err = strconv.ParseFloat(v, 64)
			case "avg300":
				d.Avg300, err = strconv.ParseFloat(v, 64)
			case "total":
				var us uint64
				us, err = strconv.ParseUint(v, 10, 64)
				d.TotalNanos = us * 1000
			}
			if err != nil {
				return nil, fmt.Errorf("pressure field %q: %w", field, err)
			}
		}
		seen = true
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !seen {
		return nil, fmt.Errorf("no pressure line")
	}
	return p, nil
}
