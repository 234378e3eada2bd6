package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/huskrt/husk/internal/config"
	"github.com/huskrt/husk/internal/nodecheck"
)

// checkCommand is `huskd check`: what this node offers husk and lacks, read
// against the config huskd would run with. It fails (exit 1) when
// something husk needs is missing.
func checkCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("huskd check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (default "+config.DefaultPath+" when present)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	path, explicit := config.DefaultPath, false
	if *configPath != "" {
		path, explicit = *configPath, true
	}
	cfg, err := config.Load(path, explicit)
	if err != nil {
		return err
	}
	opts := nodecheck.Options{
		Runtimes: map[string]string{}, DefaultRuntime: cfg.DefaultRuntime,
		CNIConfDir: cfg.CNI.ConfDir, CNIBinDirs: cfg.CNI.BinDirs, CNIWriteDefault: cfg.CNI.WriteDefault,
		CgroupDriver: cfg.CgroupDriver, Root: cfg.Root, IsRoot: os.Geteuid() == 0,
	}
	for h, r := range cfg.Runtimes {
		opts.Runtimes[h] = r.Path
	}
	chosen := ""
	if opts.DefaultRuntime == "" {
		var why string
		opts.DefaultRuntime, why = nodecheck.DefaultRuntime(opts)
		chosen = fmt.Sprintf("default_runtime is not set: %s is the default handler (%s)\n\n", opts.DefaultRuntime, why)
	}
	pause, err := findPause(cfg.PauseBinary)
	opts.Helpers = append(opts.Helpers, nodecheck.Helper{Name: "husk-pause", Path: pause, Err: err})
	opts.Pause = pause
	monitor, err := findSibling("husk-monitor")
	opts.Helpers = append(opts.Helpers, nodecheck.Helper{Name: "husk-monitor", Path: monitor, Err: err})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fmt.Fprintf(stdout, "huskd %s: what this node offers husk (config %s)\n\n%s", version, describeConfig(path, explicit), chosen)
	if missing := nodecheck.Write(stdout, nodecheck.Run(ctx, opts)); missing > 0 {
		return fmt.Errorf("check: %d thing(s) husk needs are missing", missing)
	}
	return nil
}

func describeConfig(path string, explicit bool) string {
	if _, err := os.Stat(path); err != nil && !explicit {
		return "embedded defaults"
	}
	return path
}
