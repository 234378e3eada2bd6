package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/singleflight"

	"github.com/huskrt/husk/internal/atomicfile"
)

// Auth is the credentials of a pull request.
type Auth struct {
	Username, Password, Auth, IdentityToken, RegistryToken string
}

// check refuses credentials that cannot go in an HTTP header as they are
// (auth, identity and registry tokens; a username and password are
// base64-encoded): a control character is a malformed request, not a
// registry that is unavailable. The error names the field, never its value.
func (a *Auth) check() error {
	if a == nil {
		return nil
	}
	for _, f := range []struct{ name, value string }{
		{"auth", a.Auth}, {"identity_token", a.IdentityToken}, {"registry_token", a.RegistryToken},
	} {
		if strings.ContainsFunc(f.value, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
			return fmt.Errorf("auth.%s holds a control character: %w", f.name, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func (a *Auth) authenticator() authn.Authenticator {
	if a == nil || *a == (Auth{}) {
		return nil
	}
	return authn.FromConfig(authn.AuthConfig{
		Username: a.Username, Password: a.Password, Auth: a.Auth,
		IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken,
	})
}

// endpoint is one place to pull a registry's content from.
type endpoint struct {
	host     string // host[:port]
	insecure bool   // plain HTTP
	cfg      Registry
}

// endpoints lists, in order, the mirrors configured for host (or for "*"),
// then host itself unless skip_upstream.
func (s *Service) endpoints(host string) ([]endpoint, error) {
	cfg, ok := s.opts.Registries[host]
	if !ok {
		cfg = s.opts.Registries["*"]
	}
	var out []endpoint
	for _, e := range cfg.Endpoints {
		switch {
		case strings.HasPrefix(e, "http://"):
			out = append(out, endpoint{host: strings.TrimSuffix(strings.TrimPrefix(e, "http://"), "/"), insecure: true, cfg: cfg})
		case strings.HasPrefix(e, "https://"):
			out = append(out, endpoint{host: strings.TrimSuffix(strings.TrimPrefix(e, "https://"), "/"), cfg: cfg})
		default:
			return nil, fmt.Errorf("registry %s: endpoint %q is not an http(s) URL: %w", host, e, errdefs.ErrInvalidArgument)
		}
	}
	if !cfg.SkipUpstream {
		up := cfg
		up.Endpoints = nil
		if own, ok := s.opts.Registries[host]; ok {
			up = own
		}
		out = append(out, endpoint{host: host, cfg: up})
	}
	return out, nil
}

func (e endpoint) transport() (http.RoundTripper, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if e.cfg.CAFile != "" || e.cfg.InsecureSkipVerify {
		tc := &tls.Config{InsecureSkipVerify: e.cfg.InsecureSkipVerify} //nolint:gosec // the operator asked for it
		if e.cfg.CAFile != "" {
			pem, err := os.ReadFile(e.cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("ca_file: %w", err)
			}
			pool, _ := x509.SystemCertPool()
			if pool == nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ca_file %s: no certificate", e.cfg.CAFile)
			}
			tc.RootCAs = pool
		}
		t.TLSClientConfig = tc
	}
	return t, nil
}

// configAuth is the configured credentials of an endpoint's registry.
func (e endpoint) configAuth() *Auth {
	c := e.cfg
	return &Auth{Username: c.Username, Password: c.Password, Auth: c.Auth, IdentityToken: c.IdentityToken}
}

// Pull fetches ref and returns its image ID. Identical concurrent pulls
// are one pull; layers already unpacked are not fetched again.
func (s *Service) Pull(ctx context.Context, ref string, auth *Auth) (string, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return "", err
	}
	if err := auth.check(); err != nil {
		return "", err
	}
	key := r.String()
	if auth != nil {
		key += "\x00" + auth.Username + "\x00" + auth.Password + "\x00" + auth.Auth + "\x00" + auth.IdentityToken + "\x00" + auth.RegistryToken
	}
	// The pull goes on for the others when this caller gives up.
	return merged(ctx, &s.pulls, key, "pull "+r.String(), s.log, func() (string, error) {
		s.zstd.pullStarted()
		defer s.zstd.pullEnded()
		start := time.Now()
		id, err := s.pull(context.WithoutCancel(ctx), r, auth)
		if err == nil && s.opts.Pulls != nil {
			s.opts.Pulls.PullDone(time.Since(start))
		}
		return id, err
	})
}

func (s *Service) pull(ctx context.Context, r Reference, auth *Auth) (string, error) {
	eps, err := s.endpoints(r.Host)
	if err != nil {
		return "", err
	}
	platform := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	// The error is shown to the client and logged: no credential of the
	// request or of an endpoint may be in it.
	auths := []*Auth{auth}
	for _, ep := range eps {
		auths = append(auths, ep.configAuth())
	}
	scrub := credentialScrubber(auths...)
	var tried []string
	var kind error = errdefs.ErrNotFound
	for _, ep := range eps {
		id, err := s.pullFrom(ctx, r, ep, auth, platform)
		if err == nil {
			return id, nil
		}
		// The final error says what the user must fix: the node's disk
		// when the store is full (no other endpoint can help), credentials
		// when any endpoint refused them, the reference when every
		// endpoint lacks it, else the registries themselves.
		switch {
		case errors.Is(err, syscall.ENOSPC):
			kind = errdefs.ErrResourceExhausted
		case errdefs.IsUnauthorized(err):
			kind = errdefs.ErrUnauthenticated
		case errdefs.IsNotFound(err):
		case kind == errdefs.ErrNotFound:
			kind = errdefs.ErrUnavailable
		}
		scheme := "https://"
		if ep.insecure {
			scheme = "http://"
		}
		tried = append(tried, scheme+ep.host+": "+scrub.Replace(err.Error()))
		if kind == errdefs.ErrResourceExhausted {
			break
		}
	}
	if len(tried) == 0 {
		return "", fmt.Errorf("pull %s: no endpoint configured (skip_upstream without endpoints): %w", r, errdefs.ErrInvalidArgument)
	}
	return "", fmt.Errorf("pull %s: every endpoint failed: %s: %w", r, strings.Join(tried, "; "), kind)
}

// pullFrom pulls r from one endpoint: manifest (the platform's, from an
// index), config, then the layers not yet unpacked, then the record.
func (s *Service) pullFrom(ctx context.Context, r Reference, ep endpoint, auth *Auth, platform v1.Platform) (string, error) {
	inner, err := ep.transport()
	if err != nil {
		return "", err
	}
	// Every request of the pull goes through one watchdog each; its
	// connections end with it.
	tr := &watchdogTransport{inner: inner, timeout: s.opts.PullProgressTimeout}
	defer tr.CloseIdleConnections()
	// The layers' requests carry the context the image is resolved with:
	// cancelling it ends them all when one fails.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	start := time.Now()
	desc, img, err := resolve(ctx, r, ep, tr, auth, platform, s.opts.MaxConcurrentDownloads)
	if err != nil {
		return "", err
	}
	p, err := fetchConfig(img)
	if err != nil {
		return "", err
	}
	// Until the record exists, nothing refers to what this pull writes:
	// keep GC (a concurrent RemoveImage) away from it.
	release := s.hold(p.held())
	defer release()
	if err := s.writeBlob(p.configName.String(), bytes.NewReader(p.config)); err != nil {
		return "", err
	}
	layersAt := time.Now()
	if err := s.fetchLayers(ctx, cancel, p); err != nil {
		return "", err
	}
	syncAt := time.Now()
	if err := s.syncStore(); err != nil {
		return "", err
	}
	recordAt := time.Now()
	rec := p.record()
	if err := s.record(rec, r, desc.Digest.String()); err != nil {
		return "", err
	}
	s.log.Debug("image pulled", "image", r.String(), "id", rec.ID, "layers", len(rec.Layers),
		"manifest_and_config", layersAt.Sub(start), "layers_time", syncAt.Sub(layersAt),
		"syncfs", recordAt.Sub(syncAt), "record", time.Since(recordAt))
	return rec.ID, nil
}

// resolve fetches the manifest r names at ep: this platform's image when
// r names an index.
// jobs bounds go-containerregistry's own limit on concurrent blob fetches
// (4 by default), which must not be below the pull's.
func resolve(ctx context.Context, r Reference, ep endpoint, tr http.RoundTripper, auth *Auth, platform v1.Platform, jobs int) (*remote.Descriptor, v1.Image, error) {
	nref, err := r.on(ep.host, ep.insecure)
	if err != nil {
		return nil, nil, err
	}
	a := auth.authenticator()
	if a == nil {
		a = ep.configAuth().authenticator()
	}
	if a == nil {
		a = authn.Anonymous
	}
	desc, err := remote.Get(nref, remote.WithContext(ctx), remote.WithTransport(tr), remote.WithAuth(a), remote.WithPlatform(platform), remote.WithJobs(jobs))
	if err != nil {
		return nil, nil, classify(err)
	}
	img, err := desc.Image()
	if err != nil {
		return nil, nil, fmt.Errorf("resolve %s for %s/%s: %w", desc.Digest, platform.OS, platform.Architecture, classify(err))
	}
	return desc, img, nil
}

// pulled is an image being pulled: its manifest and config, read before
// any layer is fetched.
type pulled struct {
	img         v1.Image
	rawManifest []byte
	manifest    *v1.Manifest
	configName  v1.Hash
	config      []byte
	configFile  *v1.ConfigFile
}

// fetchConfig fetches img's config and checks that it lists a diff ID for
// every layer of the manifest.
func fetchConfig(img v1.Image) (*pulled, error) {
	p := &pulled{img: img}
	var err error
	if p.rawManifest, err = img.RawManifest(); err != nil {
		return nil, classify(err)
	}
	if p.manifest, err = img.Manifest(); err != nil {
		return nil, classify(err)
	}
	if p.configName, err = img.ConfigName(); err != nil {
		return nil, classify(err)
	}
	if p.config, err = img.RawConfigFile(); err != nil {
		return nil, fmt.Errorf("config %s: %w", p.configName, classify(err))
	}
	if p.configFile, err = img.ConfigFile(); err != nil {
		return nil, classify(err)
	}
	if len(p.configFile.RootFS.DiffIDs) != len(p.manifest.Layers) {
		return nil, fmt.Errorf("image %s: %d layers but %d diff IDs", p.configName, len(p.manifest.Layers), len(p.configFile.RootFS.DiffIDs))
	}
	return p, nil
}

// held names what the pull writes: the config blob and each layer's
// unpacked dir.
func (p *pulled) held() []string {
	held := []string{p.configName.Hex}
	for _, d := range p.configFile.RootFS.DiffIDs {
		held = append(held, d.Hex)
	}
	return held
}

// record is the image's record: ID (the config digest), size (the
// compressed size of config and layers) and layers lowest first.
func (p *pulled) record() *Image {
	size := uint64(p.manifest.Config.Size)
	for _, l := range p.manifest.Layers {
		size += uint64(l.Size)
	}
	diffIDs := make([]string, len(p.configFile.RootFS.DiffIDs))
	for i, d := range p.configFile.RootFS.DiffIDs {
		diffIDs[i] = d.String()
	}
	return &Image{ID: p.configName.String(), Size: size, Layers: diffIDs, Manifest: p.rawManifest, Config: p.config,
		User: p.configFile.Config.User, Labels: p.configFile.Config.Labels}
}

// classify maps registry errors to errdefs kinds.
func classify(err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%w: %w", err, errdefs.ErrUnauthenticated)
		}
	}
	return err
}

// record stores the image under ID, adds r as a tag or digest name, moves
// the tag from any image that held it, and drops images left nameless.
func (s *Service) record(rec *Image, r Reference, digest string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	repoDigest := r.Name() + "@" + digest
	changed := map[string]*Image{}
	err := s.opts.DB.Update(func(tx *bolt.Tx) error {
		imgs, tags := tx.Bucket([]byte(bucketImages)), tx.Bucket([]byte(bucketTags))
		if old := imgs.Get([]byte(rec.ID)); old != nil {
			var prev Image
			if err := json.Unmarshal(old, &prev); err == nil {
				rec.RepoTags, rec.RepoDigests = prev.RepoTags, prev.RepoDigests
			}
		}
		if r.Tag != "" {
			tag := r.String()
			if holder := tags.Get([]byte(tag)); holder != nil && string(holder) != rec.ID {
				if b := imgs.Get(holder); b != nil {
					var prev Image
					if err := json.Unmarshal(b, &prev); err == nil {
						prev.RepoTags = without(prev.RepoTags, tag)
						nb, _ := json.Marshal(&prev)
						if err := imgs.Put(holder, nb); err != nil {
							return err
						}
						changed[prev.ID] = &prev
					}
				}
			}
			if err := tags.Put([]byte(tag), []byte(rec.ID)); err != nil {
				return err
			}
			rec.RepoTags = appendNew(rec.RepoTags, tag)
		}
		rec.RepoDigests = appendNew(rec.RepoDigests, repoDigest)
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		changed[rec.ID] = rec
		if err := imgs.Put([]byte(rec.ID), b); err != nil {
			return err
		}
		// The figures of what this pull (and any other) committed go with
		// the record: no transaction of their own on the pull's path.
		keys, err := s.usage.saveIn(tx)
		if err == nil {
			tx.OnCommit(func() { s.usage.saved(keys) })
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("record image %s: %w", rec.ID, err)
	}
	s.setIndex(changed)
	return nil
}

func appendNew(list []string, v string) []string {
	for _, x := range list {
		if x == v {
			return list
		}
	}
	return append(list, v)
}

// writeBlob writes r (an image config: layer blobs are not kept) to the
// content store under digest, hashing as it writes; a blob whose content
// does not match is never kept. The blob is written under a temporary name
// beside it, which GC leaves alone, and fsynced: a warm pull has no syncfs.
func (s *Service) writeBlob(digest string, r io.Reader) error {
	dst := s.blobPath(digest)
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	f, err := atomicfile.Create(dst, 0o600)
	if err != nil {
		return fmt.Errorf("blob %s: %w", digest, err)
	}
	defer f.Abort()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if err != nil {
		return fmt.Errorf("blob %s: %w", digest, err)
	}
	if s.opts.Pulls != nil {
		s.opts.Pulls.PulledBytes(n)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("blob %s: content has digest %s", digest, got)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("blob %s: %w", digest, err)
	}
	size, err := measure(dst)
	if err != nil {
		return fmt.Errorf("blob %s: %w", digest, err)
	}
	s.usage.add(blobKey(strings.TrimPrefix(digest, "sha256:")), size)
	s.measureDirs()
	return nil
}

// merged runs fn once for every caller that asks for key while it runs:
// they all get its result. A caller whose ctx ends first gets ctx.Err()
// while fn goes on for the others, so fn must not use a caller's ctx. A
// panic in fn is logged with its stack and becomes every caller's error:
// it must not hang them, nor end huskd from singleflight's goroutine.
// what names the call in messages (key may hold credentials).
func merged[T any](ctx context.Context, g *singleflight.Group, key, what string, log *slog.Logger, fn func() (T, error)) (T, error) {
	ch := g.DoChan(key, func() (v any, err error) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("panic", "in", what, "panic", p, "stack", string(debug.Stack()))
				err = fmt.Errorf("%s: panic: %v: %w", what, p, errdefs.ErrInternal)
			}
		}()
		return fn()
	})
	var zero T
	select {
	case res := <-ch:
		if res.Err != nil {
			return zero, res.Err
		}
		return res.Val.(T), nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}
