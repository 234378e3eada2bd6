package container

import "testing"

func TestImageName(t *testing.T) {
	tests := []struct {
		asked, user string
		tags        []string
		want        string
	}{
		{"busybox", "", nil, "busybox"},
		{"sha256:0123", "", nil, "sha256:0123"},
		// The kubelet creates from the ID: the status names a tag, the
		// user's when the image has it (the pod status' image).
		{"sha256:0123", "", []string{"docker.io/library/busybox:latest"}, "docker.io/library/busybox:latest"},
		{"sha256:0123", "example.com/app:2", []string{"example.com/app:1", "example.com/app:2"}, "example.com/app:2"},
		{"sha256:0123", "app:3", []string{"example.com/app:1", "example.com/app:2"}, "example.com/app:1"},
		{"busybox:latest", "", []string{"docker.io/library/busybox:latest"}, "docker.io/library/busybox:latest"},
		{"busybox", "", []string{"docker.io/library/busybox:latest"}, "docker.io/library/busybox:latest"},
		{"example.com/app:2", "", []string{"example.com/app:1", "example.com/app:2"}, "example.com/app:2"},
		{"app:3", "", []string{"example.com/app:1", "example.com/app:2"}, "example.com/app:1"},
		{"sha256:0123", "not a reference", []string{"example.com/app:1"}, "example.com/app:1"},
	}
	for _, tt := range tests {
		if got := imageName(tt.asked, tt.user, tt.tags); got != tt.want {
			t.Errorf("imageName(%q, %q, %q) = %q, want %q", tt.asked, tt.user, tt.tags, got, tt.want)
		}
	}
}

func TestLogPath(t *testing.T) {
	tests := []struct {
		podDir, path, want string
	}{
		{"/var/log/pods/ns_p_uid", "c/0.log", "/var/log/pods/ns_p_uid/c/0.log"},
		{"/var/log/pods/ns_p_uid", "./c//0.log", "/var/log/pods/ns_p_uid/c/0.log"},
		{"/var/log/pods/ns_p_uid", "", ""},
		{"", "c/0.log", ""},
	}
	for _, tt := range tests {
		if got := logPath(tt.podDir, tt.path); got != tt.want {
			t.Errorf("logPath(%q, %q) = %q, want %q", tt.podDir, tt.path, got, tt.want)
		}
	}
}
