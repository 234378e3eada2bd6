package stats

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

type devKey struct{ major, minor uint64 }

// deviceNames maps block device numbers to "/dev/<name>" from
// /proc/partitions, read again only when a number is not known: devices
// come and go far less often than stats are read.
type deviceNames struct {
	mu    sync.Mutex // guards names
	names map[devKey]string
}

// name returns the device's name, "" when /proc/partitions does not list
// it (a device-mapper or loop device without partitions entry).
func (d *deviceNames) name(proc string, major, minor uint64) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := devKey{major, minor}
	if n, ok := d.names[k]; ok {
		return n
	}
	d.names = readPartitions(filepath.Join(proc, "partitions"))
	if _, ok := d.names[k]; !ok {
		d.names[k] = "" // not listed: do not read the file again for it
	}
	return d.names[k]
}

// readPartitions parses /proc/partitions: two header lines, then
// "major minor #blocks name".
func readPartitions(path string) map[devKey]string {
	out := map[devKey]string{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 4 {
			continue
		}
		major, err1 := strconv.ParseUint(fields[0], 10, 64)
		minor, err2 := strconv.ParseUint(fields[1], 10, 64)
		if err1 != nil || err2 != nil {
			continue // the header
		}
		out[devKey{major, minor}] = "/dev/" + fields[3]
	}
	return out
}
