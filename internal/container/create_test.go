package container

import "testing"

func TestImageName(t *testing.T) {
	tests := []struct {
		asked string
		tags  []string
		want  string
	}{
		{"busybox", nil, "busybox"},
		{"sha256:0123", []string{"docker.io/library/busybox:latest"}, "sha256:0123"},
		{"busybox:latest", []string{"docker.io/library/busybox:latest"}, "docker.io/library/busybox:latest"},
		{"busybox", []string{"docker.io/library/busybox:latest"}, "docker.io/library/busybox:latest"},
		{"example.com/app:2", []string{"example.com/app:1", "example.com/app:2"}, "example.com/app:2"},
		{"app:3", []string{"example.com/app:1", "example.com/app:2"}, "example.com/app:1"},
	}
	for _, tt := range tests {
		if got := imageName(tt.asked, tt.tags); got != tt.want {
			t.Errorf("imageName(%q, %q) = %q, want %q", tt.asked, tt.tags, got, tt.want)
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
