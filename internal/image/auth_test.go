package image

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// Credentials that cannot be sent in a header are a bad request, named by
// field: FuzzCRI found them reported as a registry that is unavailable.
func TestPullRefusesUnsendableCredentials(t *testing.T) {
	dir := t.TempDir()
	s := newService(t, filepath.Join(dir, "images"), openDB(t, dir), mirror("127.0.0.1:1"))
	for _, tt := range []struct {
		field string
		auth  Auth
	}{
		{"auth.auth", Auth{Auth: "a\nb"}},
		{"auth.identity_token", Auth{IdentityToken: "t\x00"}},
		{"auth.registry_token", Auth{RegistryToken: "secret\r\nX-Injected: 1"}},
	} {
		_, err := s.Pull(context.Background(), "busybox", &tt.auth)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tt.field) || strings.Contains(err.Error(), "secret") {
			t.Errorf("pull with a bad %s = %v; want InvalidArgument naming the field, not its value", tt.field, err)
		}
	}
	if err := (&Auth{Username: "a\nb", Password: "\x00"}).check(); err != nil {
		t.Errorf("a username and password go base64-encoded, whatever they hold: %v", err)
	}
}
