package nodecheck

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// defaultPlugins are those of the network huskd writes when the conf dir
// has none ([cni] write_default).
var defaultPlugins = []string{"bridge", "host-local", "portmap"}

// cni finds the network huskd would use (the first loadable file in
// lexical order, as internal/network does) and each plugin it needs,
// IPAM ones included.
func cni(o *Options) []Finding {
	files, err := libcni.ConfFiles(o.CNIConfDir, []string{".conf", ".conflist", ".json"})
	if err != nil && !os.IsNotExist(err) {
		return []Finding{{Area: "CNI config", Status: Missing, Detail: fmt.Sprintf("read %s: %v", o.CNIConfDir, err),
			Fix: "make " + o.CNIConfDir + " readable, or set [cni] conf_dir"}}
	}
	sort.Strings(files)
	var conf Finding
	var plugins []string
	var errs []string
	for _, f := range files {
		name, ps, err := loadNetwork(f)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", f, err))
			continue
		}
		conf = Finding{Area: "CNI config", Status: OK, Detail: fmt.Sprintf("network %q from %s", name, f)}
		plugins = ps
		break
	}
	switch {
	case plugins != nil:
		if len(errs) > 0 {
			conf.Detail += "\nskipped: " + strings.Join(errs, "\nskipped: ")
		}
	case len(errs) > 0:
		conf = Finding{Area: "CNI config", Status: Missing, Detail: "no usable network config:\n" + strings.Join(errs, "\n"),
			Fix: "fix the file, or remove it to let huskd write its default network"}
	case o.CNIWriteDefault:
		conf = Finding{Area: "CNI config", Status: OK,
			Detail: fmt.Sprintf("none in %s yet: huskd writes its default bridge network there at start ([cni] write_default)", o.CNIConfDir)}
		plugins = defaultPlugins
	default:
		conf = Finding{Area: "CNI config", Status: Missing, Detail: "no network config in " + o.CNIConfDir,
			Fix: "install your cluster's network plugin (it writes one), write a .conflist there, or set [cni] write_default = true"}
	}
	return []Finding{conf, cniPlugins(o, plugins)}
}

// loadNetwork returns a config file's network name and plugin types,
// IPAM plugins included.
func loadNetwork(path string) (string, []string, error) {
	var list *libcni.NetworkConfigList
	var err error
	if strings.HasSuffix(path, ".conflist") {
		list, err = libcni.ConfListFromFile(path)
	} else {
		var conf *libcni.NetworkConfig
		//lint:ignore SA1019 single-plugin .conf files are still on nodes; huskd reads them
		if conf, err = libcni.ConfFromFile(path); err == nil {
			//lint:ignore SA1019 see above
			list, err = libcni.ConfListFromConf(conf)
		}
	}
	if err != nil {
		return "", nil, err
	}
	if len(list.Plugins) == 0 {
		return "", nil, fmt.Errorf("no plugins")
	}
	var types []string
	for _, p := range list.Plugins {
		types = append(types, p.Network.Type)
		var ipam struct {
			IPAM struct {
				Type string `json:"type"`
			} `json:"ipam"`
		}
		if json.Unmarshal(p.Bytes, &ipam) == nil && ipam.IPAM.Type != "" {
			types = append(types, ipam.IPAM.Type)
		}
	}
	return list.Name, types, nil
}

func cniPlugins(o *Options, plugins []string) Finding {
	f := Finding{Area: "CNI plugins", Status: OK}
	if plugins == nil {
		f.Status, f.Detail = Missing, "unknown: no network config to read them from"
		f.Fix = "see CNI config"
		return f
	}
	var found, missing []string
	for _, p := range plugins {
		if path := findPlugin(o.CNIBinDirs, p); path != "" {
			found = append(found, path)
		} else {
			missing = append(missing, p)
		}
	}
	f.Detail = strings.Join(found, ", ")
	if len(missing) > 0 {
		f.Status = Missing
		f.Detail = fmt.Sprintf("not in %s: %s", strings.Join(o.CNIBinDirs, ", "), strings.Join(missing, ", "))
		f.Fix = "install them (Debian: apt-get install containernetworking-plugins), or add their directory to [cni] bin_dirs"
	}
	return f
}

func findPlugin(dirs []string, name string) string {
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}
