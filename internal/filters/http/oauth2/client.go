package oauth2

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// tokens is a successful token response (RFC 6749 section 5.1).
type tokens struct {
	access, id, refresh string
	expiresIn           time.Duration
}

// tokenError is a failed token request: reason and details are Envoy's
// log wording; transport says no response came (a connect failure,
// reset or timeout).
type tokenError struct {
	reason, details string
	transport       bool
}

func (e *tokenError) Error() string {
	if e.details == "" {
		return e.reason
	}
	return e.reason + ": " + e.details
}

// exchangeCode asks for tokens with an authorization code (RFC 6749
// section 4.1.3), the PKCE code verifier and the client's credentials as
// auth_type says, in Envoy's form order.
func (c *filterConfig) exchangeCode(code, redirectURI, verifier string) (tokens, *tokenError) {
	cb := percentEncode(redirectURI, formReserved)
	var body, basic string
	switch c.auth {
	case urlEncodedBody:
		body = "grant_type=authorization_code&code=" + code + "&client_id=" + percentEncode(c.clientID, formReserved) +
			"&client_secret=" + percentEncode(c.secret(), formReserved) + "&redirect_uri=" + cb + "&code_verifier=" + verifier
	case basicAuth:
		basic = c.basic()
		body = "grant_type=authorization_code&code=" + code + "&redirect_uri=" + cb + "&code_verifier=" + verifier
	case tlsClientAuth:
		body = "grant_type=authorization_code&code=" + code + "&client_id=" + percentEncode(c.clientID, formReserved) +
			"&redirect_uri=" + cb + "&code_verifier=" + verifier
	}
	return c.tokenRequest(body, basic, "Failed to get access token")
}

// refreshTokens asks for new tokens with a refresh token (RFC 6749
// section 6).
func (c *filterConfig) refreshTokens(refresh string) (tokens, *tokenError) {
	var body, basic string
	switch c.auth {
	case urlEncodedBody:
		body = "grant_type=refresh_token&refresh_token=" + percentEncode(refresh, formReserved) +
			"&client_id=" + percentEncode(c.clientID, formReserved) + "&client_secret=" + percentEncode(c.secret(), formReserved)
	case basicAuth:
		basic = c.basic()
		body = "grant_type=refresh_token&refresh_token=" + percentEncode(refresh, "")
	case tlsClientAuth:
		body = "grant_type=refresh_token&refresh_token=" + percentEncode(refresh, formReserved) +
			"&client_id=" + percentEncode(c.clientID, formReserved)
	}
	return c.tokenRequest(body, basic, "Failed to refresh access token")
}

func (c *filterConfig) secret() string {
	if c.clientSecret == nil {
		return ""
	}
	return string(c.clientSecret.Generic())
}

// basic is the Authorization header of client_secret_basic (RFC 6749
// section 2.3.1); as Envoy, the id and secret are not form-encoded first.
func (c *filterConfig) basic() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.clientID+":"+c.secret()))
}

// tokenRequest POSTs the form to the token endpoint's cluster, retrying as
// retry_policy says, all within the endpoint's timeout (Envoy's
// AsyncClient timeout covers the retries).
func (c *filterConfig) tokenRequest(body, basic, failReason string) (tokens, *tokenError) {
	ctx := context.Background()
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	back := time.Duration(0)
	if c.retry != nil {
		back = c.retry.base
	}
	for attempt := 0; ; attempt++ {
		status, respBody, err := c.post(ctx, body, basic)
		retriable := false
		if c.retry != nil && attempt < c.retry.retries && ctx.Err() == nil {
			switch {
			case err != nil:
				retriable = c.retry.onConnect
			case status >= 500:
				retriable = c.retry.on5xx || c.retry.onGateway && status >= 502 && status <= 504
			}
		}
		if retriable {
			// Envoy's jittered exponential back-off.
			t := time.NewTimer(time.Duration(rand.Int64N(int64(back)) + 1))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			back = min(2*back, c.retry.max)
			if ctx.Err() == nil {
				continue
			}
		}
		if err != nil {
			return tokens{}, &tokenError{reason: failReason + " due to HTTP request failure", details: err.Error(), transport: true}
		}
		return c.parseTokens(status, respBody, failReason)
	}
}

// post makes one attempt.
func (c *filterConfig) post(ctx context.Context, body, basic string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+c.tokenHost+c.tokenPath, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Host = c.tokenHost
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// As Envoy: some servers (GitHub) answer form-encoded without it.
	req.Header.Set("Accept", "application/json")
	if basic != "" {
		req.Header.Set("Authorization", basic)
	}
	if c.async == nil {
		return 0, nil, fmt.Errorf("no async client")
	}
	resp, err := c.async.Do(ctx, c.cluster, req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}

// parseTokens reads the token response as Envoy's OAuthResponse message:
// access_token is required, expires_in falls back to default_expires_in
// and must end up positive.
func (c *filterConfig) parseTokens(status int, body []byte, failReason string) (tokens, *tokenError) {
	if status != 200 {
		return tokens{}, &tokenError{reason: failReason, details: fmt.Sprintf("response code: %d, response body: %s", status, body)}
	}
	var r struct {
		AccessToken  *string     `json:"access_token"`
		IDToken      *string     `json:"id_token"`
		RefreshToken *string     `json:"refresh_token"`
		ExpiresIn    json.Number `json:"expires_in"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil {
		return tokens{}, &tokenError{reason: "Failed to parse oauth response body", details: fmt.Sprintf("response body: %s, exception: %v", body, err)}
	}
	if r.AccessToken == nil {
		return tokens{}, &tokenError{reason: "No access token found in the token exchange response", details: fmt.Sprintf("response body: %s", body)}
	}
	t := tokens{access: *r.AccessToken, expiresIn: c.defaultExpiresIn}
	if r.IDToken != nil {
		t.id = *r.IDToken
	}
	if r.RefreshToken != nil {
		t.refresh = *r.RefreshToken
	}
	if r.ExpiresIn != "" {
		n, err := strconv.ParseUint(r.ExpiresIn.String(), 10, 63)
		if err != nil {
			return tokens{}, &tokenError{reason: "Failed to parse oauth response body", details: fmt.Sprintf("response body: %s, exception: %v", body, err)}
		}
		t.expiresIn = time.Duration(min(n, uint64(1<<33))) * time.Second
	}
	t.expiresIn = t.expiresIn.Truncate(time.Second)
	if t.expiresIn <= 0 {
		return tokens{}, &tokenError{reason: "No default or explicit access token expiration found in the token exchange response", details: fmt.Sprintf("response body: %s", body)}
	}
	return t, nil
}
