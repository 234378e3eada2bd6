package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// No credential leaves huskd (issue 11, item 3): verbose Status shows the
// config with its TOML keys and every secret redacted, and pulls refused
// by a registry that quotes back what it was sent (header, token form)
// leave none in their error nor in huskd's log at debug level.
func TestNoSecretShown(t *testing.T) {
	t.Parallel()
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		quoted := fmt.Sprintf("echo: authorization=%s query=%s body=%s", r.Header.Get("Authorization"), r.URL.RawQuery, body)
		if r.URL.Path != "/token" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+r.Host+`/token",service="echo"`)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": "UNAUTHORIZED", "message": quoted}}})
	}))
	t.Cleanup(echo.Close)
	host := strings.TrimPrefix(echo.URL, "http://")
	const (
		user, password = "bob", "pw+e2e/s3cret=1"
		cfgPassword    = "cfg-pw+e2e/s3cret=2"
		cfgIdentity    = "cfg-idtok+e2e/s3cret=3"
		token          = "tok+e2e/s3cret=4"
	)
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	cfgAuth := base64.StdEncoding.EncodeToString([]byte(user + ":" + cfgPassword))
	// Every secret key of [registries."<host>"] is set.
	e := newEnv(t, withConfig(fmt.Sprintf(`[registries."*"]
endpoints = ["http://%[1]s"]
skip_upstream = true
[registries."private.example"]
endpoints = ["http://%[1]s"]
skip_upstream = true
username = %[2]q
password = %[3]q
auth = %[4]q
identity_token = %[5]q
`, host, user, cfgPassword, cfgAuth, cfgIdentity)))
	e.start()
	secrets := []string{password, cfgPassword, cfgIdentity, token, basic, cfgAuth}
	for _, s := range []string{password, cfgPassword, cfgIdentity, token} {
		secrets = append(secrets, url.QueryEscape(s))
	}
	hasSecret := func(text string) string {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				return s
			}
		}
		return ""
	}

	st, err := e.rt.Status(e.ctx(), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	shown := st.Info["config"]
	var cfg struct {
		Root       string `json:"root"`
		Timeout    string `json:"image_pull_progress_timeout"`
		Registries map[string]map[string]any
	}
	if err := json.Unmarshal([]byte(shown), &cfg); err != nil {
		t.Fatalf("verbose Status config: %v\n%s", err, shown)
	}
	private := cfg.Registries["private.example"]
	if cfg.Root == "" || cfg.Timeout == "" || private["username"] != user || private["password"] != "<redacted>" ||
		private["auth"] != "<redacted>" || private["identity_token"] != "<redacted>" {
		t.Errorf("verbose Status config lacks the TOML keys, or a secret is not redacted:\n%s", shown)
	}
	if strings.Contains(shown, `"Registries"`) || strings.Contains(shown, `"IdentityToken"`) {
		t.Errorf("verbose Status config has Go field names:\n%s", shown)
	}
	if s := hasSecret(shown); s != "" {
		t.Errorf("verbose Status shows %q:\n%s", s, shown)
	}

	images := runtimeapi.NewImageServiceClient(e.conn)
	for _, tt := range []struct {
		image string
		auth  *runtimeapi.AuthConfig
	}{
		{"library/private:1", &runtimeapi.AuthConfig{Username: user, Password: password}},
		{"library/private:1", &runtimeapi.AuthConfig{Auth: basic}},
		{"library/private:1", &runtimeapi.AuthConfig{IdentityToken: token}},
		{"library/private:1", &runtimeapi.AuthConfig{RegistryToken: token}},
		{"private.example/library/private:1", nil},
	} {
		_, err := images.PullImage(e.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: tt.image}, Auth: tt.auth})
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "echo:") {
			t.Errorf("pull %s: %v; want Unauthenticated with the registry's answer", tt.image, err)
			continue
		}
		if s := hasSecret(err.Error()); s != "" {
			t.Errorf("the error of pull %s shows %q: %v", tt.image, s, err)
		}
	}
	if s := hasSecret(e.logs()); s != "" {
		t.Errorf("huskd's log (debug level) shows %q:\n%s", s, e.logs())
	}
	e.assertNoLeaks()
}
