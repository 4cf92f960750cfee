package contourconfig

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

// TestRateLimitService: rateLimitService with Contour's keys (the default
// policy's header conditions with the lower-cased keys Contour's decoder
// gives them) becomes the model's service and default policy; bad blocks
// are refused with the key named.
func TestRateLimitService(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		err        string // substring of the error; "" for none
		check      func(t *testing.T, c *Config)
	}{
		{name: "unset", yaml: "", check: func(t *testing.T, c *Config) {
			if m := c.Model().RateLimitService; m != nil {
				t.Errorf("no block gave %+v", m)
			}
		}},
		{name: "every key", yaml: `
rateLimitService:
  extensionService: projectcontour/ratelimit
  domain: envoy
  failOpen: true
  enableXRateLimitHeaders: true
  enableResourceExhaustedCode: true
  defaultGlobalRateLimitPolicy:
    descriptors:
    - entries:
      - genericKey: {key: k, value: v}
      - requestHeader: {headerName: x-user, descriptorKey: user}
      - remoteAddress: {}
    - entries:
      - requestHeaderValueMatch:
          headers: [{name: x-a, notpresent: true}, {name: x-b, exact: B, ignorecase: true}]
          expectMatch: false
          value: other
`, check: func(t *testing.T, c *Config) {
			m := c.Model().RateLimitService
			if m == nil || m.ExtensionService != (types.NamespacedName{Namespace: "projectcontour", Name: "ratelimit"}) || m.Domain != "envoy" ||
				!m.FailOpen || !m.EnableXRateLimitHeaders || !m.EnableResourceExhaustedCode {
				t.Fatalf("model %+v", m)
			}
			p := m.DefaultPolicy
			if p == nil || len(p.Descriptors) != 2 || len(p.Descriptors[0].Entries) != 3 || p.Descriptors[0].Entries[0].GenericKey.Value != "v" ||
				p.Descriptors[0].Entries[1].RequestHeader.DescriptorKey != "user" || p.Descriptors[0].Entries[2].RemoteAddress == nil {
				t.Fatalf("default policy %+v", p)
			}
			hv := p.Descriptors[1].Entries[0].RequestHeaderValueMatch
			if hv == nil || hv.ExpectMatch == nil || *hv.ExpectMatch || hv.Value != "other" || len(hv.Headers) != 2 ||
				!hv.Headers[0].NotPresent || hv.Headers[1].Exact != "B" || !hv.Headers[1].IgnoreCase {
				t.Errorf("header value match %+v", hv)
			}
			if !strings.Contains(c.String(), "rateLimitService=projectcontour/ratelimit") {
				t.Errorf("start-up summary %q", c.String())
			}
		}},
		{name: "domain left to the model's default", yaml: "rateLimitService: {extensionService: ns/rls}\n", check: func(t *testing.T, c *Config) {
			if m := c.Model().RateLimitService; m == nil || m.Domain != "" || m.FailOpen || m.DefaultPolicy != nil {
				t.Errorf("model %+v", m)
			}
		}},
		{name: "no extension service", yaml: "rateLimitService: {domain: contour}\n", err: `rateLimitService.extensionService "": use <namespace>/<name>`},
		{name: "extension service without namespace", yaml: "rateLimitService: {extensionService: ratelimit}\n", err: `rateLimitService.extensionService "ratelimit"`},
		{name: "entry with two fields", yaml: `
rateLimitService:
  extensionService: ns/rls
  defaultGlobalRateLimitPolicy: {descriptors: [{entries: [{genericKey: {value: a}, remoteAddress: {}}]}]}
`, err: "rateLimitService.defaultGlobalRateLimitPolicy: rate limit descriptor entry must have exactly one field set"},
		{name: "expectMatch omitted", yaml: `
rateLimitService:
  extensionService: ns/rls
  defaultGlobalRateLimitPolicy: {descriptors: [{entries: [{requestHeaderValueMatch: {headers: [{name: x, present: true}], value: v}}]}]}
`, err: "requestHeaderValueMatch.expectMatch must be given"},
		{name: "camelCase header keys are not Contour's here", yaml: `
rateLimitService:
  extensionService: ns/rls
  defaultGlobalRateLimitPolicy: {descriptors: [{entries: [{requestHeaderValueMatch: {headers: [{name: x, notPresent: true}], expectMatch: true, value: v}}]}]}
`, err: "field notPresent not found"},
		{name: "unknown key", yaml: "rateLimitService: {extensionService: ns/rls, timeout: 1s}\n", err: "field timeout not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(tc.yaml))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}
