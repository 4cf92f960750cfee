package credential_injector

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	oauth2v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/injected_credentials/oauth2/v3"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/tlsx"
	"github.com/legateproxy/legate/internal/upstream"
)

// defaultRetryInterval is Envoy's token_fetch_retry_interval default.
const defaultRetryInterval = 2 * time.Second

// maxTokenResponse bounds the token endpoint's answer we read.
const maxTokenResponse = 1 << 20

// oauth2Injector is envoy.http.injected_credentials.oauth2: the token
// provider's current token in Authorization. It is a handle: the provider
// (and its refresh goroutine) stop when the handle is garbage — the
// filter config was replaced and its last stream ended.
type oauth2Injector struct{ p *tokenProvider }

// tokenProvider fetches and renews the access token (Envoy's
// TokenProvider and OAuth2ClientImpl).
type tokenProvider struct {
	async    *asyncclient.Client
	clusters *upstream.Manager
	cluster  string
	uri      string // the token endpoint, as configured
	host     string // its authority
	timeout  time.Duration
	clientID string
	secret   *tlsx.Secret // nil with TLS_CLIENT_AUTH
	authType oauth2v3.OAuth2_AuthType
	scopes   string // space-separated
	params   [][2]string
	retry    time.Duration
	log      *slog.Logger

	token atomic.Pointer[string] // "Bearer <access_token>", nil until fetched

	startOnce sync.Once
	first     chan struct{} // closed when the first fetch attempt ended
	stop      chan struct{}
	stopOnce  sync.Once

	requested, fetched                                   *stats.Counter
	failSecret, failCluster, failReset, failBad, failRsp *stats.Counter
}

func compileOAuth2(ctx *httpfilter.Context, m *oauth2v3.OAuth2, path string, sc stats.Scope, log *slog.Logger) (*oauth2Injector, error) {
	if err := config.CheckFields(m, path, "token_endpoint", "scopes", "client_credentials", "token_fetch_retry_interval", "endpoint_params"); err != nil {
		return nil, err
	}
	ep := config.Join(path, "token_endpoint")
	hu := m.GetTokenEndpoint()
	if err := config.CheckFields(hu, ep, "uri", "cluster", "timeout"); err != nil {
		return nil, err
	}
	u, err := url.Parse(hu.GetUri())
	if err != nil || u.Host == "" {
		return nil, config.Errorf(config.Join(ep, "uri"), "token endpoint %q is not an absolute URL (http://host/path)", hu.GetUri())
	}
	if ctx.Async == nil {
		return nil, config.Errorf(ep, "side calls to clusters are not available here")
	}
	cc := m.GetClientCredentials()
	cp := config.Join(path, "client_credentials")
	if cc == nil {
		return nil, config.Errorf(cp, "client_credentials is required (the only OAuth2 flow Envoy implements)")
	}
	if err := config.CheckFields(cc, cp, "client_id", "client_secret", "auth_type"); err != nil {
		return nil, err
	}
	p := &tokenProvider{async: ctx.Async, clusters: ctx.Clusters, cluster: hu.GetCluster(), uri: hu.GetUri(), host: u.Host,
		timeout: hu.GetTimeout().AsDuration(), clientID: cc.GetClientId(), authType: cc.GetAuthType(),
		scopes: strings.Join(m.GetScopes(), " "), retry: defaultRetryInterval, log: log,
		first: make(chan struct{}), stop: make(chan struct{}),
		requested: sc.Counter("token_requested"), fetched: sc.Counter("token_fetched"),
		failSecret: sc.Counter("token_fetch_failed_on_client_secret"), failCluster: sc.Counter("token_fetch_failed_on_cluster_not_found"),
		failReset: sc.Counter("token_fetch_failed_on_stream_reset"), failBad: sc.Counter("token_fetch_failed_on_bad_token"),
		failRsp: sc.Counter("token_fetch_failed_on_bad_response_code")}
	if p.timeout <= 0 {
		p.timeout = time.Second
	}
	if cc.GetAuthType() != oauth2v3.OAuth2_TLS_CLIENT_AUTH {
		if p.secret, err = resolveSecret(ctx, cc.GetClientSecret(), config.Join(cp, "client_secret")); err != nil {
			return nil, err
		}
	}
	if d := m.GetTokenFetchRetryInterval(); d != nil {
		// Envoy keeps whole seconds (the proto requires at least one).
		p.retry = time.Duration(d.GetSeconds()) * time.Second
	}
	for i, kv := range m.GetEndpointParams() {
		if err := config.CheckFields(kv, config.Index(config.Join(path, "endpoint_params"), i), "name", "value"); err != nil {
			return nil, err
		}
		p.params = append(p.params, [2]string{kv.GetName(), kv.GetValue()})
	}
	inj := &oauth2Injector{p: p}
	runtime.AddCleanup(inj, func(p *tokenProvider) { p.close() }, p)
	return inj, nil
}

// ready starts the provider on first use. Envoy fetches the first token
// when the config is created, so a request normally finds it; Legate
// starts at the first request, which (alone with any that come meanwhile)
// waits for that first attempt, at most the endpoint's timeout.
func (o *oauth2Injector) ready() {
	p := o.p
	p.startOnce.Do(func() { go p.run() })
	select {
	case <-p.first:
	default:
		t := time.NewTimer(p.timeout + 100*time.Millisecond)
		defer t.Stop()
		select {
		case <-p.first:
		case <-t.C:
		}
	}
}

func (o *oauth2Injector) inject(h *headers.Request, overwrite bool) error {
	if _, ok := h.Map.Lookup("authorization"); ok && !overwrite {
		return errAlreadyExists
	}
	tok := o.p.token.Load()
	if tok == nil {
		return errNoCredential
	}
	h.Map.Set("authorization", *tok)
	return nil
}

func (p *tokenProvider) close() { p.stopOnce.Do(func() { close(p.stop) }) }

// run is the refresh loop: a token is renewed at half its lifetime (as
// Envoy), a failed fetch retried after token_fetch_retry_interval — but
// not a bad token (an unparsable answer), which Envoy does not retry.
func (p *tokenProvider) run() {
	firstDone := false
	for {
		wait, again := p.fetch()
		if !firstDone {
			close(p.first)
			firstDone = true
		}
		if !again {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-p.stop:
			t.Stop()
			return
		}
	}
}

// errBadToken is a 200 answer without a usable token.
var errBadToken = errors.New("no access_token or expires_in in the token response")

// fetch makes one token request; it returns when to fetch next and
// whether to.
func (p *tokenProvider) fetch() (time.Duration, bool) {
	var secret string
	if p.authType != oauth2v3.OAuth2_TLS_CLIENT_AUTH {
		secret = string(p.secret.Generic())
		if secret == "" {
			p.log.Error("credential_injector oauth2: client secret is empty, retrying", "retry_in", p.retry)
			p.failSecret.Inc()
			return p.retry, true
		}
	}
	if p.clusters != nil && p.clusters.Get(p.cluster) == nil {
		p.log.Error("credential_injector oauth2: OAuth cluster not found, retrying", "cluster", p.cluster, "retry_in", p.retry)
		p.failCluster.Inc()
		return p.retry, true
	}
	p.requested.Inc()
	tok, expiresIn, err := p.request(secret)
	if err != nil {
		p.log.Error("credential_injector oauth2: failed to get access token", "token_endpoint", p.uri, "error", err)
		if errors.Is(err, errBadToken) {
			p.failBad.Inc()
			return 0, false
		}
		return p.retry, true
	}
	p.token.Store(&tok)
	p.fetched.Inc()
	// Renew at half the lifetime, as Envoy; a token that lives under two
	// seconds is renewed every second rather than in a busy loop.
	return max(expiresIn/2, time.Second), true
}

// tokenResponse is RFC 6749 section 5.1's answer; expires_in may come as
// a number or, as protobuf JSON reads a uint64, a string.
type tokenResponse struct {
	AccessToken *string          `json:"access_token"`
	ExpiresIn   *json.RawMessage `json:"expires_in"`
}

// request sends the client credentials grant (RFC 6749 section 4.4.2).
func (p *tokenProvider) request(secret string) (string, time.Duration, error) {
	var body strings.Builder
	body.WriteString("grant_type=client_credentials")
	if p.authType != oauth2v3.OAuth2_BASIC_AUTH {
		// URL_ENCODED_BODY (and TLS_CLIENT_AUTH, without the secret):
		// RFC 6749 section 2.3.1's form parameters.
		body.WriteString("&client_id=" + url.QueryEscape(p.clientID))
		if p.authType == oauth2v3.OAuth2_URL_ENCODED_BODY {
			body.WriteString("&client_secret=" + url.QueryEscape(secret))
		}
	}
	if p.scopes != "" {
		body.WriteString("&scope=" + url.QueryEscape(p.scopes))
	}
	if len(p.params) > 0 {
		body.WriteString("&" + encodeOrdered(p.params))
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", p.uri, strings.NewReader(body.String()))
	if err != nil {
		return "", 0, fmt.Errorf("token request: %w", err)
	}
	req.Host = p.host
	req.ContentLength = int64(body.Len())
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// RFC 6749 section 5.1 answers in JSON; some servers need asking.
	req.Header.Set("Accept", "application/json")
	if p.authType == oauth2v3.OAuth2_BASIC_AUTH {
		// HTTP Basic over the raw id and secret, as Envoy's OAuth2 clients
		// send it (RFC 6749 section 2.3.1 would form-encode them first;
		// servers decode either way for ordinary ids and secrets).
		cred := p.clientID + ":" + secret
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(cred)))
	}
	resp, err := p.async.Do(ctx, p.cluster, req)
	if err != nil {
		// Envoy's async client turns a connect failure, a timeout or no
		// healthy host into a local 503/504 answer: a bad response code.
		p.failRsp.Inc()
		return "", 0, fmt.Errorf("token endpoint unreachable: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse))
	if err != nil {
		p.failReset.Inc()
		return "", 0, fmt.Errorf("token response cut short: %w", err)
	}
	if resp.StatusCode != 200 {
		p.failRsp.Inc()
		return "", 0, fmt.Errorf("token endpoint answered %d: %.200s", resp.StatusCode, b)
	}
	return parseTokenResponse(b)
}

// parseTokenResponse reads a 200 answer: access_token and expires_in are
// both required (Envoy's OAuthResponse), else it is a bad token.
func parseTokenResponse(b []byte) (string, time.Duration, error) {
	var tr tokenResponse
	if err := json.Unmarshal(b, &tr); err != nil {
		return "", 0, fmt.Errorf("%w: %v", errBadToken, err)
	}
	if tr.AccessToken == nil || tr.ExpiresIn == nil {
		return "", 0, errBadToken
	}
	exp, err := strconv.ParseUint(strings.Trim(string(*tr.ExpiresIn), `"`), 10, 63)
	if err != nil {
		return "", 0, fmt.Errorf("%w: expires_in %s", errBadToken, *tr.ExpiresIn)
	}
	// Clamped (about 272 years) so the product cannot overflow into a
	// negative lifetime, which would refetch every second.
	return "Bearer " + *tr.AccessToken, time.Duration(min(exp, 1<<33)) * time.Second, nil
}

// encodeOrdered form-encodes parameters in their configured order.
func encodeOrdered(kvs [][2]string) string {
	parts := make([]string, len(kvs))
	for i, kv := range kvs {
		parts[i] = url.QueryEscape(kv[0]) + "=" + url.QueryEscape(kv[1])
	}
	return strings.Join(parts, "&")
}
