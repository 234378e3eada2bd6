package network

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

func writePlugin(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "plugin")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// A plugin that hangs, with a child holding its stdout, is killed with the
// child when the context ends, and the call returns at once.
func TestPluginExecKillsTheGroup(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	plugin := writePlugin(t, `echo $$ > `+pids+`.tmp; sleep 100000 & echo $! >> `+pids+`.tmp; mv `+pids+`.tmp `+pids+`; wait`)
	ctx, cancel := context.WithTimeoutCause(context.Background(), 300*time.Millisecond, errors.New("test timeout"))
	defer cancel()
	start := time.Now()
	_, err := (&pluginExec{}).ExecPlugin(ctx, plugin, []byte("{}"), nil)
	if err == nil || !strings.Contains(err.Error(), "killed with its process group: test timeout") {
		t.Fatalf("ExecPlugin = %v; want the kill and the context's cause", err)
	}
	if took := time.Since(start); took > pipeGrace {
		t.Errorf("ExecPlugin returned after %s", took)
	}
	b, err := os.ReadFile(pids)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		deadline := time.Now().Add(5 * time.Second)
		for {
			stat, err := os.ReadFile("/proc/" + f + "/stat")
			if err != nil || strings.Contains(string(stat), ") Z ") {
				break
			}
			if time.Now().After(deadline) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("process %d of the plugin's group survived", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestPluginExecResults(t *testing.T) {
	tests := []struct {
		name, body, wantOut, wantErr string
	}{
		{"result", `cat >/dev/null; echo '{"cniVersion":"1.0.0"}'`, `{"cniVersion":"1.0.0"}`, ""},
		{"CNI error", `echo '{"cniVersion":"1.0.0","code":11,"msg":"no IP left"}'; exit 1`, "", "no IP left"},
		{"stderr", `echo "bridge exploded" >&2; exit 2`, "", `netplugin failed: "bridge exploded\n": exit status 2`},
		{"nothing", `exit 3`, "", "netplugin failed with no error message: exit status 3"},
		{"garbage", `echo 'not json'; exit 1`, "", `netplugin failed with output "not json\n": exit status 1`},
		{"env and stdin", `read l; [ "$l" = '{"in":1}' ] && [ "$CNI_COMMAND" = ADD ] && echo ok`, "ok", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := (&pluginExec{}).ExecPlugin(context.Background(), writePlugin(t, tt.body), []byte("{\"in\":1}\n"), []string{"CNI_COMMAND=ADD"})
			if tt.wantErr == "" {
				if err != nil || strings.TrimSpace(string(out)) != tt.wantOut {
					t.Errorf("ExecPlugin = %q, %v; want %q", out, err, tt.wantOut)
				}
				return
			}
			var cniErr *types.Error
			if !errors.As(err, &cniErr) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ExecPlugin error = %v; want a CNI error with %q", err, tt.wantErr)
			}
		})
	}
}
