package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A container holds its image's layers: removing the image, and the image
// GC of a restart, leave the running container its rootfs; once the
// container is removed, the next start frees them. Its cgroup is under
// its pod's parent.
func TestContainerHoldsItsImageLayers(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	pod := e.podConfig("holds")
	podID := e.runPod(pod, "")
	ctr := e.run(podID, pod, ctrConfig("holder", "sleep", "3600"))

	st, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: ctr, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		CgroupsPath string `json:"cgroupsPath"`
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil || !strings.HasPrefix(info.CgroupsPath, e.cgroupParent+"/") {
		t.Errorf("container cgroup %q (%v), want under the pod's parent %s", info.CgroupsPath, err, e.cgroupParent)
	}

	images := runtimeapi.NewImageServiceClient(e.conn)
	for _, ref := range []string{"busybox:e2e", "busybox:stopsignal"} {
		if _, err := images.RemoveImage(e.ctx(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
			t.Fatalf("RemoveImage %s: %v", ref, err)
		}
	}
	layers := func() int {
		ents, err := os.ReadDir(filepath.Join(e.root, "images", "layers"))
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	readPasswd := func(when string) {
		if r := e.exec(ctr, 10, "cat", "/etc/passwd"); !strings.Contains(string(r.Stdout), "app:x:1000") {
			t.Errorf("%s: /etc/passwd from the image layer = %q, %q", when, r.Stdout, r.Stderr)
		}
	}
	readPasswd("image removed")
	if n := layers(); n != 1 {
		t.Errorf("image removed: %d layers, want the container's 1", n)
	}

	restart := func() {
		if err := e.stop(); err != nil {
			t.Fatal(err)
		}
		e.start()
	}
	restart()
	readPasswd("after a restart's image GC")
	if n := layers(); n != 1 {
		t.Errorf("after a restart: %d layers, want the container's 1", n)
	}

	e.stopRemove(podID)
	restart()
	if n := layers(); n != 0 {
		t.Errorf("container removed, then a restart: %d layers left, want 0", n)
	}
	e.assertNoLeaks(podID, ctr)
}
