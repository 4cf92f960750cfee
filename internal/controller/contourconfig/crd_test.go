package contourconfig

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	contourv1alpha1 "github.com/legateproxy/legate/api/projectcontour/v1alpha1"
	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/xdsgen"
)

// TestContourConfigurationFromSpec converts ContourConfiguration specs
// (written as kubectl would apply them) field by field: where each field
// lands (the file's Config, its flags, the model or the xDS options),
// the CRD's defaults, validation errors with the fields' paths and the
// fields Legate refuses.
func TestContourConfigurationFromSpec(t *testing.T) {
	d := func(s string) *time.Duration { v, _ := time.ParseDuration(s); return &v }
	xds := func(c *Config) xdsgen.Options { var o xdsgen.Options; c.ApplyXDS(&o); return o }
	flags := func(want map[string]string) func(t *testing.T, c *Config) {
		return func(t *testing.T, c *Config) {
			if got := c.Flags(); !reflect.DeepEqual(got, want) {
				t.Errorf("flags %v, want %v", got, want)
			}
		}
	}
	for _, tc := range []struct {
		name, spec string
		check      func(t *testing.T, c *Config)
		err        string
	}{
		{name: "empty spec: Contour's CRD defaults", spec: "{}", check: func(t *testing.T, c *Config) {
			o := xds(c)
			// Unlike the file, the CRD has no 60s idle default: Envoy's 1h.
			if o.Timeouts.ConnectionIdle == nil || *o.Timeouts.ConnectionIdle != time.Hour || o.Timeouts.Request != nil || o.ConnectTimeout != 2*time.Second {
				t.Errorf("timeouts %+v connect %s", o.Timeouts, o.ConnectTimeout)
			}
			if o.AccessLog.Format != "envoy" || o.AccessLog.Level != "info" || !reflect.DeepEqual(o.CipherSuites, DefaultCipherSuites) || o.TLSMinVersion != "1.2" || o.TLSMaxVersion != "1.3" {
				t.Errorf("options %+v", o)
			}
			if m := c.Model(); m.DisablePermitInsecure || m.EnableExternalNameService || m.DNSLookupFamily != "auto" || m.RateLimitService != nil {
				t.Errorf("model %+v", m)
			}
			if len(c.Flags()) != 0 {
				t.Errorf("flags %v", c.Flags())
			}
		}},
		{name: "envoy.http and envoy.https", spec: `{envoy: {http: {address: 127.0.0.2, port: 18080, accessLog: /tmp/h.log}, https: {address: 127.0.0.2, port: 18443, accessLog: /tmp/s.log}}}`,
			check: flags(map[string]string{"envoy-listen-address": "127.0.0.2", "http-port": "18080", "https-port": "18443", "envoy-http-access-log": "/tmp/h.log", "envoy-https-access-log": "/tmp/s.log"})},
		{name: "envoy.https port only", spec: `{envoy: {https: {port: 9443}}}`, check: flags(map[string]string{"https-port": "9443"})},
		{name: "envoy.listener.useProxyProtocol", spec: `{envoy: {listener: {useProxyProtocol: true}}}`, check: flags(map[string]string{"use-proxy-protocol": "true"})},
		{name: "xdsServer", spec: `{xdsServer: {port: 18001, tls: {caFile: /c/ca.crt, certFile: /c/tls.crt, keyFile: /c/tls.key}}}`,
			check: flags(map[string]string{"xds-address": "0.0.0.0:18001", "xds-ca-file": "/c/ca.crt", "xds-cert-file": "/c/tls.crt", "xds-key-file": "/c/tls.key"})},
		{name: "xdsServer.tls.insecure", spec: `{xdsServer: {address: 127.0.0.1, tls: {insecure: true}}}`, check: flags(map[string]string{"xds-address": "127.0.0.1:8001", "insecure": "true"})},
		{name: "ingress", spec: `{ingress: {classNames: [internal], statusAddress: 192.0.2.7}}`, check: flags(map[string]string{"ingress-class": "internal", "ingress-status-address": "192.0.2.7"})},
		{name: "httpproxy", spec: `{httpproxy: {disablePermitInsecure: true, rootNamespaces: [a, b], fallbackCertificate: {namespace: ns, name: fb}}}`, check: func(t *testing.T, c *Config) {
			flags(map[string]string{"root-namespaces": "a,b", "fallback-certificate": "ns/fb"})(t, c)
			if !c.Model().DisablePermitInsecure {
				t.Error("disablePermitInsecure not set")
			}
		}},
		{name: "metrics and health on one address", spec: `{metrics: {address: 127.0.0.1, port: 8100}, health: {address: 127.0.0.1, port: 8100}}`, check: flags(map[string]string{"http-address": "127.0.0.1:8100"})},
		{name: "health only", spec: `{health: {port: 8200}}`, check: flags(map[string]string{"http-address": "0.0.0.0:8200"})},
		{name: "enableExternalNameService", spec: `{enableExternalNameService: true}`, check: func(t *testing.T, c *Config) {
			if !c.Model().EnableExternalNameService {
				t.Error("not set")
			}
		}},
		{name: "envoy.logging json", spec: `{envoy: {logging: {accessLogFormat: json, accessLogLevel: error, accessLogJSONFields: ["@timestamp", method, "custom=%REQ(X-CUSTOM)%"]}}}`, check: func(t *testing.T, c *Config) {
			o := xds(c)
			if o.AccessLog.Format != "json" || o.AccessLog.Level != "error" || len(o.AccessLog.JSONFields) != 3 || o.AccessLog.JSONFields["custom"] != "%REQ(X-CUSTOM)%" {
				t.Errorf("access log %+v", o.AccessLog)
			}
		}},
		{name: "envoy.logging format string", spec: `{envoy: {logging: {accessLogFormatString: "%REQ(:PATH)% %RESPONSE_CODE%\n"}}}`, check: func(t *testing.T, c *Config) {
			if o := xds(c); o.AccessLog.FormatString != "%REQ(:PATH)% %RESPONSE_CODE%\n" {
				t.Errorf("format %q", o.AccessLog.FormatString)
			}
		}},
		{name: "envoy.listener.tls", spec: `{envoy: {listener: {tls: {minimumProtocolVersion: "1.3", cipherSuites: [ECDHE-RSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, AES128-SHA]}}}}`, check: func(t *testing.T, c *Config) {
			o := xds(c)
			if o.TLSMinVersion != "1.3" || o.TLSMaxVersion != "1.3" || !reflect.DeepEqual(o.CipherSuites, []string{"ECDHE-RSA-AES256-GCM-SHA384", "AES128-SHA"}) {
				t.Errorf("TLS %s-%s %v", o.TLSMinVersion, o.TLSMaxVersion, o.CipherSuites)
			}
			if c.Model().MinTLSVersion != "1.3" {
				t.Errorf("model TLS %s", c.Model().MinTLSVersion)
			}
		}},
		{name: "envoy.listener knobs", spec: `{envoy: {listener: {disableMergeSlashes: true, disableAllowChunkedLength: true, serverHeaderTransformation: pass_through, httpMaxConcurrentStreams: 100, per-connection-buffer-limit-bytes: 65536, compression: {algorithm: disabled}, socketOptions: {}}}}`, check: func(t *testing.T, c *Config) {
			o := xds(c)
			if !o.DisableMergeSlashes || o.ServerHeaderTransformation != "pass_through" || o.HTTP2MaxConcurrentStreams != 100 || o.ListenerBufferLimit != 65536 {
				t.Errorf("options %+v", o)
			}
		}},
		{name: "envoy.timeouts", spec: `{envoy: {timeouts: {requestTimeout: infinity, connectionIdleTimeout: 30s, streamIdleTimeout: 5m, maxConnectionDuration: 1h, delayedCloseTimeout: 1s, connectionShutdownGracePeriod: 5s, connectTimeout: 3s}}}`, check: func(t *testing.T, c *Config) {
			o := xds(c)
			want := xdsgen.Timeouts{Request: d("0s"), ConnectionIdle: d("30s"), StreamIdle: d("5m"), MaxConnectionDuration: d("1h"), DelayedClose: d("1s"), ConnectionShutdownGracePeriod: d("5s")}
			if !reflect.DeepEqual(o.Timeouts, want) || o.ConnectTimeout != 3*time.Second {
				t.Errorf("timeouts %+v connect %s", o.Timeouts, o.ConnectTimeout)
			}
		}},
		{name: "envoy.defaultHTTPVersions", spec: `{envoy: {defaultHTTPVersions: [HTTP/2]}}`, check: func(t *testing.T, c *Config) {
			if o := xds(c); !reflect.DeepEqual(o.HTTPVersions, []string{"http/2"}) {
				t.Errorf("versions %v", o.HTTPVersions)
			}
		}},
		{name: "envoy.cluster", spec: `{envoy: {cluster: {dnsLookupFamily: v4, maxRequestsPerConnection: 1, per-connection-buffer-limit-bytes: 32768, circuitBreakers: {maxConnections: 50, perHostMaxConnections: 4}}}}`, check: func(t *testing.T, c *Config) {
			o, m := xds(c), c.Model()
			if o.ClusterMaxRequestsPerConnection != 1 || o.ClusterBufferLimit != 32768 || m.DNSLookupFamily != "v4" ||
				!reflect.DeepEqual(m.CircuitBreakers, &model.CircuitBreakers{MaxConnections: 50, PerHostMaxConnections: 4}) {
				t.Errorf("cluster %+v %+v", o, m)
			}
		}},
		{name: "envoy.network", spec: `{envoy: {network: {numTrustedHops: 2, adminPort: 9001, stripTrailingHostDot: false}}}`, check: func(t *testing.T, c *Config) {
			if o := xds(c); o.XffNumTrustedHops != 2 {
				t.Errorf("hops %d", o.XffNumTrustedHops)
			}
		}},
		{name: "policy", spec: `{policy: {requestHeaders: {set: {X-Env: prod}, remove: [X-Debug]}, responseHeaders: {set: {X-By: legate}}, applyToIngress: true}}`, check: func(t *testing.T, c *Config) {
			m := c.Model()
			if !m.HeadersToIngress || !reflect.DeepEqual(m.RequestHeaders, &model.HeadersPolicy{Set: []model.KV{{Name: "X-Env", Value: "prod"}}, Remove: []string{"X-Debug"}}) ||
				!reflect.DeepEqual(m.ResponseHeaders, &model.HeadersPolicy{Set: []model.KV{{Name: "X-By", Value: "legate"}}}) {
				t.Errorf("model %+v %+v", m.RequestHeaders, m.ResponseHeaders)
			}
		}},
		{name: "rateLimitService", spec: `{rateLimitService: {extensionService: {namespace: rl, name: svc}, domain: d, failOpen: true, enableXRateLimitHeaders: true, enableResourceExhaustedCode: true,
  defaultGlobalRateLimitPolicy: {descriptors: [{entries: [{remoteAddress: {}}, {requestHeaderValueMatch: {headers: [{name: X-A, present: true}], value: v}}]}]}}}`, check: func(t *testing.T, c *Config) {
			r := c.Model().RateLimitService
			if r == nil || r.ExtensionService.String() != "rl/svc" || r.Domain != "d" || !r.FailOpen || !r.EnableXRateLimitHeaders || !r.EnableResourceExhaustedCode || r.DefaultPolicy == nil {
				t.Fatalf("rate limit %+v", r)
			}
			e := r.DefaultPolicy.Descriptors[0].Entries
			if e[0].RemoteAddress == nil || e[1].RequestHeaderValueMatch == nil || !*e[1].RequestHeaderValueMatch.ExpectMatch {
				t.Errorf("descriptors %+v (expectMatch defaults to true in the CRD)", e)
			}
		}},

		// Validation, with the fields' paths.
		{name: "bad access log format", spec: `{envoy: {logging: {accessLogFormat: text}}}`, err: `spec.envoy.logging.accessLogFormat "text": use envoy or json`},
		{name: "bad json field", spec: `{envoy: {logging: {accessLogFormat: json, accessLogJSONFields: [nope]}}}`, err: `spec.envoy.logging.accessLogJSONFields: "nope" is not a known field`},
		{name: "min above max", spec: `{envoy: {listener: {tls: {minimumProtocolVersion: "1.3", maximumProtocolVersion: "1.2"}}}}`, err: "spec.envoy.listener.tls.minimumProtocolVersion 1.3 is above spec.envoy.listener.tls.maximumProtocolVersion 1.2"},
		{name: "bad cipher", spec: `{envoy: {listener: {tls: {cipherSuites: [RC4-MD5]}}}}`, err: `spec.envoy.listener.tls.cipherSuites: cipher "RC4-MD5"`},
		{name: "bad timeout", spec: `{envoy: {timeouts: {streamIdleTimeout: 5 minutes}}}`, err: `spec.envoy.timeouts.streamIdleTimeout: "5 minutes" is not a duration`},
		{name: "infinite connect timeout", spec: `{envoy: {timeouts: {connectTimeout: infinity}}}`, err: `spec.envoy.timeouts.connectTimeout "infinity"`},
		{name: "bad HTTP version", spec: `{envoy: {defaultHTTPVersions: [HTTP/3]}}`, err: `spec.envoy.defaultHTTPVersions "http/3"`},
		{name: "bad DNS family", spec: `{envoy: {cluster: {dnsLookupFamily: v5}}}`, err: `spec.envoy.cluster.dnsLookupFamily "v5"`},
		{name: "bad server header", spec: `{envoy: {listener: {serverHeaderTransformation: drop}}}`, err: `spec.envoy.listener.serverHeaderTransformation "drop"`},
		{name: "bad header name", spec: `{policy: {requestHeaders: {set: {"bad header": x}}}}`, err: `spec.policy.requestHeaders.set: "bad header" is not a valid HTTP header name`},
		{name: "rate limit service without a name", spec: `{rateLimitService: {extensionService: {namespace: rl, name: ""}}}`, err: "spec.rateLimitService.extensionService"},
		{name: "fallback without namespace", spec: `{httpproxy: {fallbackCertificate: {name: x, namespace: ""}}}`, err: "spec.httpproxy.fallbackCertificate: namespace must be defined"},
		{name: "two ingress classes", spec: `{ingress: {classNames: [a, b]}}`, err: "spec.ingress.classNames"},
		{name: "different listener addresses", spec: `{envoy: {http: {address: 127.0.0.1}, https: {address: 127.0.0.2}}}`, err: "--envoy-listen-address"},
		{name: "health and metrics apart", spec: `{health: {port: 8001}, metrics: {port: 8002}}`, err: "spec.health 0.0.0.0:8001 and spec.metrics 0.0.0.0:8002"},
		{name: "admin port", spec: `{envoy: {network: {adminPort: 9100}}}`, err: "spec.envoy.network.adminPort 9100"},

		// Refused: Contour fields Legate does not implement.
		{name: "gateway without namespace", spec: `{gateway: {gatewayRef: {name: b}}}`, err: "gateway.gatewayRef: set both namespace and name"},
		{name: "globalExtAuth", spec: `{globalExtAuth: {extensionRef: {name: a, namespace: b}}}`, err: "spec.globalExtAuth: not implemented by Legate"},
		{name: "tracing without extensionService", spec: `{tracing: {serviceName: x}}`, err: "tracing.extensionService must be defined"},
		{name: "featureFlags", spec: `{featureFlags: [useEndpointSlices]}`, err: "spec.featureFlags: not implemented by Legate"},
		{name: "debug", spec: `{debug: {port: 6060}}`, err: "spec.debug: not implemented by Legate"},
		{name: "metrics TLS", spec: `{metrics: {tls: {certFile: /c}}}`, err: "spec.metrics.tls: not implemented by Legate"},
		{name: "envoy.service", spec: `{envoy: {service: {namespace: projectcontour, name: envoy}}}`, err: "spec.envoy.service: not implemented by Legate"},
		{name: "envoy.health", spec: `{envoy: {health: {port: 8002}}}`, err: "spec.envoy.health: not implemented by Legate"},
		{name: "envoy.metrics", spec: `{envoy: {metrics: {port: 8002}}}`, err: "spec.envoy.metrics: not implemented by Legate"},
		{name: "envoy.clientCertificate", spec: `{envoy: {clientCertificate: {namespace: a, name: b}}}`, err: "spec.envoy.clientCertificate: not implemented by Legate"},
		{name: "envoy.omEnforcedHealth", spec: `{envoy: {omEnforcedHealth: {port: 8003}}}`, err: "spec.envoy.omEnforcedHealth: not implemented by Legate"},
		{name: "compression", spec: `{envoy: {listener: {compression: {algorithm: gzip}}}}`, err: "spec.envoy.listener.compression.algorithm: not implemented by Legate"},
		{name: "exact balancer", spec: `{envoy: {listener: {connectionBalancer: exact}}}`, err: "spec.envoy.listener.connectionBalancer: not implemented by Legate"},
		{name: "downstream max requests", spec: `{envoy: {listener: {maxRequestsPerConnection: 10}}}`, err: "spec.envoy.listener.maxRequestsPerConnection: not implemented by Legate"},
		{name: "socket options", spec: `{envoy: {listener: {socketOptions: {tos: 16}}}}`, err: "spec.envoy.listener.socketOptions: not implemented by Legate"},
		{name: "max requests per IO cycle", spec: `{envoy: {listener: {maxRequestsPerIOCycle: 10}}}`, err: "spec.envoy.listener.maxRequestsPerIOCycle: not implemented by Legate"},
		{name: "max connections per listener", spec: `{envoy: {listener: {maxConnectionsPerListener: 10}}}`, err: "spec.envoy.listener.maxConnectionsPerListener: not implemented by Legate"},
		{name: "upstream TLS", spec: `{envoy: {cluster: {upstreamTLS: {minimumProtocolVersion: "1.3"}}}}`, err: "spec.envoy.cluster.upstreamTLS: not implemented by Legate"},
		{name: "strip trailing host dot", spec: `{envoy: {network: {stripTrailingHostDot: true}}}`, err: "spec.envoy.network.stripTrailingHostDot: not implemented by Legate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var spec contourv1alpha1.ContourConfigurationSpec
			if err := yaml.UnmarshalStrict([]byte(tc.spec), &spec); err != nil {
				t.Fatalf("spec: %v", err)
			}
			c, err := FromSpec(&spec)
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

func TestResourceNamespace(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"CONTOUR_NAMESPACE": "projectcontour", "POD_NAMESPACE": "p"}, "projectcontour"},
		{map[string]string{"POD_NAMESPACE": "p"}, "p"},
		{nil, "legate-system"},
	} {
		if got := ResourceNamespace(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.env, got, tc.want)
		}
	}
}

// TestContourConfigurationGatewayAndTracing: spec.gateway.gatewayRef and
// spec.tracing apply as the file's keys do.
func TestContourConfigurationGatewayAndTracing(t *testing.T) {
	var spec contourv1alpha1.ContourConfigurationSpec
	if err := yaml.Unmarshal([]byte(`{gateway: {gatewayRef: {namespace: projectcontour, name: contour}}, tracing: {extensionService: {namespace: obs, name: otel}, serviceName: shop, customTags: [{tagName: team, literal: a}]}}`), &spec); err != nil {
		t.Fatal(err)
	}
	c, err := FromSpec(&spec)
	if err != nil {
		t.Fatal(err)
	}
	if r := c.GatewayRef(); r == nil || r.String() != "projectcontour/contour" {
		t.Errorf("GatewayRef() = %v", r)
	}
	tr := c.Model().Tracing
	if tr == nil || tr.ExtensionService.String() != "obs/otel" || tr.ServiceName != "shop" || len(tr.CustomTags) != 3 {
		t.Errorf("tracing = %+v", tr)
	}
}

func TestDecodeContourConfigurationUnknownField(t *testing.T) {
	obj := map[string]any{"apiVersion": "projectcontour.io/v1alpha1", "kind": "ContourConfiguration",
		"metadata": map[string]any{"name": "c"},
		"spec":     map[string]any{"envoy": map[string]any{"listener": map[string]any{"maxConnectionsToAcceptPerSocketEvent": int64(5)}}}}
	_, unknown, err := decodeContourConfiguration(obj)
	if err != nil || unknown == nil || !strings.Contains(unknown.Error(), "maxConnectionsToAcceptPerSocketEvent") {
		t.Errorf("unknown field: err %v, unknown %v", err, unknown)
	}
	delete(obj["spec"].(map[string]any), "envoy")
	if _, unknown, err := decodeContourConfiguration(obj); err != nil || unknown != nil {
		t.Errorf("known fields only: err %v, unknown %v", err, unknown)
	}
}
