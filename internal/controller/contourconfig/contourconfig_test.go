package contourconfig

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/xdsgen"
)

// TestParse covers Contour's keys: defaults, accepted values, Contour's
// validation errors and the keys Legate refuses.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		check      func(t *testing.T, c *Config)
		err        string // substring of the error; "" for none
	}{
		{name: "empty file is Contour's defaults", yaml: "", check: func(t *testing.T, c *Config) {
			if c.AccessLogFormat != "envoy" || c.AccessLogLevel != "info" || c.TLS.MinimumProtocolVersion != "1.2" || c.TLS.MaximumProtocolVersion != "1.3" ||
				c.Timeouts.ConnectionIdleTimeout != "60s" || c.Timeouts.ConnectTimeout != "2s" || c.Cluster.DNSLookupFamily != "auto" ||
				c.Server.XDSServerType != "contour" || c.ServerHeaderTransformation != "overwrite" || c.EnableExternalNameService || c.DisablePermitInsecure {
				t.Errorf("defaults: %+v", c)
			}
			if !reflect.DeepEqual(c.TLS.CipherSuites, DefaultCipherSuites) || len(c.JSONFields) != len(DefaultJSONFields) {
				t.Errorf("default ciphers %v, fields %v", c.TLS.CipherSuites, c.JSONFields)
			}
		}},
		{name: "comments only", yaml: "# nothing\n", check: func(t *testing.T, c *Config) {
			if c.AccessLogFormat != "envoy" {
				t.Errorf("format %q", c.AccessLogFormat)
			}
		}},
		{name: "Contour's example ConfigMap content", yaml: `
disablePermitInsecure: true
enableExternalNameService: true
tls:
  minimum-protocol-version: "1.3"
  cipher-suites:
  - '[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]'
  - 'ECDHE-RSA-AES256-GCM-SHA384'
  fallback-certificate:
    name: fallback
    namespace: projectcontour
accesslog-format: json
accesslog-level: error
json-fields: ["@timestamp", "method", "response_code", "custom=%REQ(X-CUSTOM)%"]
default-http-versions: ["HTTP/1.1"]
timeouts:
  request-timeout: infinity
  connection-idle-timeout: 30s
  stream-idle-timeout: 5m
  max-connection-duration: 1h
  delayed-close-timeout: 1s
  connection-shutdown-grace-period: 5s
  connect-timeout: 3s
cluster:
  dns-lookup-family: v4
  circuit-breakers: {max-connections: 50, per-host-max-connections: 4}
network:
  num-trusted-hops: 2
  admin-port: 9001
policy:
  request-headers:
    set: {X-Env: prod}
    remove: [X-Debug]
  response-headers:
    set: {X-Served-By: legate}
  applyToIngress: true
server:
  xds-server-type: envoy
incluster: true
debug: true
ingress-status-address: 192.0.2.10
metrics:
  contour:
    address: 127.0.0.1
    port: 8100
`, check: func(t *testing.T, c *Config) {
			if !c.DisablePermitInsecure || !c.EnableExternalNameService || c.TLS.MinimumProtocolVersion != "1.3" || c.DefaultHTTPVersions[0] != "http/1.1" {
				t.Errorf("parsed: %+v", c)
			}
			want := map[string]string{"ingress-status-address": "192.0.2.10", "fallback-certificate": "projectcontour/fallback", "log-level": "debug", "http-address": "127.0.0.1:8100"}
			if got := c.Flags(); !reflect.DeepEqual(got, want) {
				t.Errorf("flags %v, want %v", got, want)
			}
			m := c.Model()
			if !m.DisablePermitInsecure || !m.EnableExternalNameService || m.MinTLSVersion != "1.3" || m.MaxTLSVersion != "1.3" || m.DNSLookupFamily != "v4" || !m.HeadersToIngress ||
				!reflect.DeepEqual(m.RequestHeaders, &model.HeadersPolicy{Set: []model.KV{{Name: "X-Env", Value: "prod"}}, Remove: []string{"X-Debug"}}) {
				t.Errorf("model %+v", m)
			}
			if !reflect.DeepEqual(m.CircuitBreakers, &model.CircuitBreakers{MaxConnections: 50, PerHostMaxConnections: 4}) {
				t.Errorf("circuit breakers %+v", m.CircuitBreakers)
			}
			var o xdsgen.Options
			c.ApplyXDS(&o)
			d := func(s string) *time.Duration { v, _ := time.ParseDuration(s); return &v }
			wantT := xdsgen.Timeouts{Request: d("0s"), ConnectionIdle: d("30s"), StreamIdle: d("5m"), MaxConnectionDuration: d("1h"), DelayedClose: d("1s"), ConnectionShutdownGracePeriod: d("5s")}
			if !reflect.DeepEqual(o.Timeouts, wantT) || o.ConnectTimeout != 3*time.Second || o.XffNumTrustedHops != 2 {
				t.Errorf("timeouts %+v connect %s hops %d", o.Timeouts, o.ConnectTimeout, o.XffNumTrustedHops)
			}
			if o.AccessLog.Format != "json" || o.AccessLog.Level != "error" || o.AccessLog.JSONFields["response_code"] != "%RESPONSE_CODE%" ||
				o.AccessLog.JSONFields["custom"] != "%REQ(X-CUSTOM)%" || o.AccessLog.JSONFields["@timestamp"] != "%START_TIME%" {
				t.Errorf("access log %+v", o.AccessLog)
			}
		}},
		{name: "kubeconfig outside the cluster", yaml: "kubeconfig: /k\n", check: func(t *testing.T, c *Config) {
			if c.Flags()["kubeconfig"] != "/k" {
				t.Errorf("flags %v", c.Flags())
			}
		}},
		{name: "0s is the default, not disabled", yaml: "timeouts: {request-timeout: 0s}\n", check: func(t *testing.T, c *Config) {
			var o xdsgen.Options
			c.ApplyXDS(&o)
			if o.Timeouts.Request != nil {
				t.Errorf("request timeout %v", *o.Timeouts.Request)
			}
		}},
		{name: "connection limits and buffers", yaml: "cluster: {max-requests-per-connection: 50, per-connection-buffer-limit-bytes: 32768}\nlistener: {http2-max-concurrent-streams: 100, per-connection-buffer-limit-bytes: 65536}\n", check: func(t *testing.T, c *Config) {
			var o xdsgen.Options
			c.ApplyXDS(&o)
			if o.ClusterMaxRequestsPerConnection != 50 || o.ClusterBufferLimit != 32768 || o.HTTP2MaxConcurrentStreams != 100 || o.ListenerBufferLimit != 65536 {
				t.Errorf("options %d %d %d %d", o.ClusterMaxRequestsPerConnection, o.ClusterBufferLimit, o.HTTP2MaxConcurrentStreams, o.ListenerBufferLimit)
			}
		}},
		{name: "envoy format string", yaml: "accesslog-format-string: \"%START_TIME(%s)% %REQ(:PATH)% %RESPONSE_CODE%\\n\"\n"},

		// Contour's validation.
		{name: "unknown key", yaml: "accesslog-formats: json\n", err: "field accesslog-formats not found"},
		{name: "unknown nested key", yaml: "timeouts: {request: 1s}\n", err: "field request not found"},
		{name: "bad access log format", yaml: "accesslog-format: text\n", err: `accesslog-format "text": use envoy or json`},
		{name: "bad access log level", yaml: "accesslog-level: debug\n", err: `accesslog-level "debug": use info, error, critical or disabled`},
		{name: "format string without newline", yaml: "accesslog-format-string: \"%RESPONSE_CODE%\"\n", err: "must end in a newline"},
		{name: "format string with unknown operator", yaml: "accesslog-format-string: \"%NOPE%\\n\"\n", err: "unknown Envoy command operator NOPE"},
		{name: "operator needs arguments", yaml: "accesslog-format-string: \"%REQ%\\n\"\n", err: "needs arguments"},
		{name: "unknown json field", yaml: "json-fields: [nope]\n", err: `json-fields: "nope" is not a known field`},
		{name: "TLS 1.1", yaml: "tls: {minimum-protocol-version: \"1.1\"}\n", err: `tls.minimum-protocol-version "1.1": use 1.2 or 1.3`},
		{name: "min above max", yaml: "tls: {minimum-protocol-version: \"1.3\", maximum-protocol-version: \"1.2\"}\n", err: "tls.minimum-protocol-version 1.3 is above tls.maximum-protocol-version 1.2"},
		{name: "bad cipher", yaml: "tls: {cipher-suites: [RC4-MD5]}\n", err: `tls.cipher-suites: cipher "RC4-MD5" is not supported`},
		{name: "fallback without namespace", yaml: "tls: {fallback-certificate: {name: x}}\n", err: "tls.fallback-certificate: namespace must be defined"},
		{name: "bad timeout", yaml: "timeouts: {stream-idle-timeout: 5 minutes}\n", err: `timeouts.stream-idle-timeout: "5 minutes" is not a duration`},
		{name: "infinite connect timeout", yaml: "timeouts: {connect-timeout: infinity}\n", err: "timeouts.connect-timeout \"infinity\""},
		{name: "bad HTTP version", yaml: "default-http-versions: [HTTP/3]\n", err: `default-http-versions "http/3": use HTTP/1.1 or HTTP/2`},
		{name: "bad DNS family", yaml: "cluster: {dns-lookup-family: v5}\n", err: `cluster.dns-lookup-family "v5"`},
		{name: "bad xDS server type", yaml: "server: {xds-server-type: grpc}\n", err: `server.xds-server-type "grpc": use contour or envoy`},
		{name: "bad server header", yaml: "serverHeaderTransformation: drop\n", err: `serverHeaderTransformation "drop"`},
		{name: "bad connection balancer", yaml: "listener: {connection-balancer: fair}\n", err: `listener.connection-balancer "fair": only exact`},
		{name: "bad header name", yaml: "policy: {request-headers: {set: {\"bad header\": x}}}\n", err: `policy.request-headers.set: "bad header" is not a valid HTTP header name`},

		// Valid for Contour, refused because the proxy lacks the operator.
		{name: "json field the proxy lacks", yaml: "json-fields: [\"@timestamp\", tls_ja3_fingerprint]\n", err: `json-fields: "tls_ja3_fingerprint" is not supported by Legate's proxy`},
		{name: "Contour's route metadata fields", yaml: "json-fields: [contour_config_name]\n", err: `json-fields: "contour_config_name" is not supported by Legate's proxy`},
		{name: "format operator the proxy lacks", yaml: "accesslog-format-string: \"%SPAN_ID%\\n\"\n", err: "accesslog-format-string: not supported by Legate's proxy"},

		// Refused: Contour keys Legate does not implement.
		{name: "gateway controllerName", yaml: "gateway: {controllerName: projectcontour.io/gateway-controller}\n", err: "gateway.controllerName: removed in Contour 1.28"},
		{name: "gateway gatewayRef without namespace", yaml: "gateway: {gatewayRef: {name: contour}}\n", err: "gateway.gatewayRef: set both namespace and name"},
		{name: "global ext auth", yaml: "globalExtAuth: {extensionRef: {name: a, namespace: b}}\n", err: "globalExtAuth: not implemented by Legate"},
		{name: "tracing without extensionService", yaml: "tracing: {serviceName: x}\n", err: "tracing.extensionService must be defined"},
		{name: "tracing extensionService form", yaml: "tracing: {extensionService: otel}\n", err: "use <namespace>/<name>"},
		{name: "tracing duplicate tag", yaml: "tracing: {extensionService: a/b, customTags: [{tagName: t, literal: x}, {tagName: t, literal: y}]}\n", err: "tagName t is duplicate"},
		{name: "tracing tag with both", yaml: "tracing: {extensionService: a/b, customTags: [{tagName: t, literal: x, requestHeaderName: y}]}\n", err: "exactly one of Literal or RequestHeaderName"},
		{name: "feature flags", yaml: "featureFlags: [useEndpointSlices]\n", err: "featureFlags: not implemented by Legate"},
		{name: "envoy client certificate", yaml: "tls: {envoy-client-certificate: {name: c, namespace: n}}\n", err: "tls.envoy-client-certificate: not implemented by Legate"},
		{name: "envoy service name", yaml: "envoy-service-name: envoy\n", err: "envoy-service-name: not implemented by Legate"},
		{name: "circuit breakers: an unknown key", yaml: "cluster: {circuit-breakers: {max-conections: 10}}\n", err: "max-conections"},
		{name: "admin port", yaml: "network: {admin-port: 9100}\n", err: "network.admin-port 9100"},
		{name: "exact balancer", yaml: "listener: {connection-balancer: exact}\n", err: "listener.connection-balancer: not implemented by Legate"},
		{name: "listener downstream request limits", yaml: "listener: {max-requests-per-connection: 100}\n", err: "listener.max-requests-per-connection: not implemented by Legate"},
		{name: "envoy metrics", yaml: "metrics: {envoy: {port: 8003}}\n", err: "metrics.envoy: not implemented by Legate"},
		{name: "metrics TLS", yaml: "metrics: {contour: {server-certificate-path: /c, server-key-path: /k}}\n", err: "metrics.contour.server-certificate-path: not implemented by Legate"},
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
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

// TestDefaultAppliesContourDefaults: without a file the controller still
// gets Contour's 60s idle timeout, 2s connect timeout and ciphers.
func TestDefaultAppliesContourDefaults(t *testing.T) {
	var o xdsgen.Options
	Default().ApplyXDS(&o)
	if o.Timeouts.ConnectionIdle == nil || *o.Timeouts.ConnectionIdle != 60*time.Second || o.Timeouts.Request != nil || o.ConnectTimeout != 2*time.Second {
		t.Errorf("timeouts %+v, connect %s", o.Timeouts, o.ConnectTimeout)
	}
	if !reflect.DeepEqual(o.CipherSuites, DefaultCipherSuites) || o.AccessLog.Format != "envoy" || o.AccessLog.Level != "info" {
		t.Errorf("options %+v", o)
	}
	if m := Default().Model(); m.EnableExternalNameService || m.DisablePermitInsecure || m.MinTLSVersion != "1.2" || m.MaxTLSVersion != "1.3" {
		t.Errorf("model %+v", m)
	}
}

func TestLoad(t *testing.T) {
	p := filepath.Join(t.TempDir(), "contour.yaml")
	os.WriteFile(p, []byte("accesslog-level: critical\n"), 0o644)
	c, err := Load(p)
	if err != nil || c.AccessLogLevel != "critical" {
		t.Fatalf("Load: %v %+v", err, c)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "contour configuration file") {
		t.Errorf("missing file: %v", err)
	}
	os.WriteFile(p, []byte("tls: {minimum-protocol-version: \"1.0\"}\n"), 0o644)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "tls.minimum-protocol-version") {
		t.Errorf("invalid file: %v", err)
	}
}

func TestGatewayRef(t *testing.T) {
	c, err := Parse(strings.NewReader("gateway:\n  gatewayRef: {namespace: projectcontour, name: contour}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.GatewayRef(); r == nil || r.Namespace != "projectcontour" || r.Name != "contour" {
		t.Errorf("GatewayRef() = %v", r)
	}
	if r := Default().GatewayRef(); r != nil {
		t.Errorf("default GatewayRef() = %v, want nil", r)
	}
}

func TestTracing(t *testing.T) {
	c, err := Parse(strings.NewReader(`tracing:
  extensionService: projectcontour/otel
  overallSampling: "12.5"
  customTags: [{tagName: team, literal: shop}, {tagName: ua, requestHeaderName: user-agent}]
`))
	if err != nil {
		t.Fatal(err)
	}
	m := c.Model().Tracing
	if m == nil || m.ExtensionService.String() != "projectcontour/otel" || m.ServiceName != "contour" || m.OverallSampling != 12.5 || m.MaxPathTagLength != 256 {
		t.Fatalf("tracing = %+v", m)
	}
	// Contour's pod tags first (includePodDetail defaults to true), then
	// the custom ones.
	want := "podName=env:HOSTNAME podNamespace=env:CONTOUR_NAMESPACE team=shop ua=header:user-agent"
	var got []string
	for _, tag := range m.CustomTags {
		v := tag.Literal
		if tag.Environment != "" {
			v = "env:" + tag.Environment
		}
		if tag.RequestHeader != "" {
			v = "header:" + tag.RequestHeader
		}
		got = append(got, tag.Name+"="+v)
	}
	if strings.Join(got, " ") != want {
		t.Errorf("tags %v, want %s", got, want)
	}
	c, _ = Parse(strings.NewReader("tracing: {extensionService: a/b, includePodDetail: false, overallSampling: \"0\"}\n"))
	if m := c.Model().Tracing; len(m.CustomTags) != 0 || m.OverallSampling != 100 {
		t.Errorf("includePodDetail false / sampling 0: %+v", m)
	}
	if Default().Model().Tracing != nil {
		t.Error("tracing without the block")
	}
}
