package image

import (
	"net/http"
	"testing"
)

func TestDescribeRequest(t *testing.T) {
	tests := []struct{ url, want string }{
		{"http://r:5000/v2/", "registry ping r:5000"},
		{"http://r/v2/library/busybox/manifests/1.36", "manifest library/busybox:1.36"},
		{"http://r/v2/a/b/c/manifests/sha256:abc", "manifest a/b/c@sha256:abc"},
		{"http://r/v2/library/busybox/blobs/sha256:abc", "blob sha256:abc"},
		{"https://auth.docker.io/token?scope=repository:library/busybox:pull&service=x", "request https://auth.docker.io/token"},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(http.MethodGet, tt.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := describeRequest(req); got != tt.want {
			t.Errorf("describeRequest(%s) = %q, want %q", tt.url, got, tt.want)
		}
	}
}
