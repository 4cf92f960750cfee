// Contour's configuration file → listeners and clusters: the access log
// on by default, its formats and levels, timeouts, HTTP versions, TLS
// parameters and the other HCM settings (package contourconfig fills
// the Options).

package xdsgen

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/testutil"
)

// settingsObjects: an HTTP and HTTPS virtual host and a TLS TCP proxy.
const settingsObjects = `
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: web, namespace: default}
spec:
  virtualhost: {fqdn: a.example.com, tls: {secretName: tls}}
  routes: [{services: [{name: s1, port: 80}]}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: tcp, namespace: default}
spec:
  virtualhost: {fqdn: t.example.com, tls: {secretName: tls}}
  tcpproxy: {services: [{name: s1, port: 80}]}
`

// renderListeners renders settingsObjects with opt and returns the
// listeners and clusters as compact JSON, one per line, checked with
// Envoy's validation.
func renderListeners(t *testing.T, opt Options) string {
	t.Helper()
	leaf := testutil.NewCA(t, "settings-ca").Issue(t, "a.example.com", "a.example.com", "t.example.com")
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "objs.yaml"), []byte(baseObjects+"---\n"+fmt.Sprintf(settingsObjects, b64(leaf.CertPEM), b64(leaf.KeyPEM))), 0o644)
	objs, err := source.LoadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := Build(model.Build(objs, model.Options{}), opt)
	if len(r.Listeners) != 2 {
		t.Fatalf("%d listeners, want HTTP and HTTPS", len(r.Listeners))
	}
	var msgs []proto.Message
	for _, l := range r.Listeners {
		if err := l.ValidateAll(); err != nil {
			t.Errorf("listener %s fails Envoy's validation: %v", l.Name, err)
		}
		msgs = append(msgs, l)
	}
	for _, c := range r.Clusters {
		if err := c.ValidateAll(); err != nil {
			t.Errorf("cluster %s fails Envoy's validation: %v", c.Name, err)
		}
		msgs = append(msgs, c)
	}
	var b strings.Builder
	for _, m := range msgs {
		a, _ := anypb.New(m)
		j, _ := protojson.Marshal(a)
		var c bytes.Buffer
		json.Compact(&c, j)
		b.Write(c.Bytes())
		b.WriteByte('\n')
	}
	return b.String()
}

func d(s string) *time.Duration {
	v, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return &v
}

func TestListenerSettings(t *testing.T) {
	const stdoutLog = `"accessLog":[{"name":"envoy.access_loggers.file","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog","path":"/dev/stdout"}}]`
	for _, tc := range []struct {
		name     string
		opt      Options
		want     []string
		wantNot  []string
		countLog int // how many access_log entries (HTTP, HTTPS, TCP proxy); -1 skips
	}{
		{name: "Contour's defaults: Envoy's access log format to /dev/stdout", opt: Options{},
			want: []string{stdoutLog, `"mergeSlashes":true`, `"httpProtocolOptions":{"acceptHttp10":true}`, `"connectTimeout":"2s"`,
				`"alpnProtocols":["h2","http/1.1"]`, `"tlsParams":{"tlsMinimumProtocolVersion":"TLSv1_2","tlsMaximumProtocolVersion":"TLSv1_3"}`},
			wantNot: []string{`"requestTimeout"`, `"streamIdleTimeout"`, `"commonHttpProtocolOptions"`, `"codecType"`, `"filter":`, `"logFormat"`, `proxy_protocol`},
			// Three logs: HTTP and HTTPS connection managers and the TLS TCP proxy (as Contour).
			countLog: 3},
		{name: "files of Contour's --envoy-http-access-log and --envoy-https-access-log", opt: Options{AccessLog: AccessLog{HTTPPath: "/var/log/http.log", HTTPSPath: "/var/log/https.log"}},
			want: []string{`"path":"/var/log/http.log"`, `"path":"/var/log/https.log"`}, wantNot: []string{`/dev/stdout`}, countLog: 3},
		{name: "envoy format string", opt: Options{AccessLog: AccessLog{FormatString: "%RESPONSE_CODE% %REQ(:PATH)%\n"}},
			want: []string{`"logFormat":{"textFormatSource":{"inlineString":"%RESPONSE_CODE% %REQ(:PATH)%\n"}}`}, countLog: 3},
		{name: "json with fields, error level", opt: Options{AccessLog: AccessLog{Format: "json", JSONFields: map[string]string{"code": "%RESPONSE_CODE%"}, Level: "error"}},
			want: []string{`"logFormat":{"jsonFormat":{"code":"%RESPONSE_CODE%"},"omitEmptyValues":true}`,
				`"filter":{"orFilter":{"filters":[{"statusCodeFilter":{"comparison":{"op":"GE","value":{"defaultValue":300,"runtimeKey":"contour.accesslog.filter.status_code"}}}},{"responseFlagFilter":{}}]}}`}, countLog: 3},
		{name: "critical level", opt: Options{AccessLog: AccessLog{Level: "critical"}}, want: []string{`"defaultValue":500`}, countLog: 3},
		{name: "disabled", opt: Options{AccessLog: AccessLog{Level: "disabled"}}, wantNot: []string{`"accessLog"`}, countLog: 0},
		{name: "timeouts", opt: Options{ConnectTimeout: 3 * time.Second, Timeouts: Timeouts{
			Request: d("0s"), ConnectionIdle: d("30s"), StreamIdle: d("5m"), MaxConnectionDuration: d("1h"), DelayedClose: d("1s"), ConnectionShutdownGracePeriod: d("5s")}},
			want: []string{`"requestTimeout":"0s"`, `"streamIdleTimeout":"300s"`, `"commonHttpProtocolOptions":{"idleTimeout":"30s","maxConnectionDuration":"3600s"}`,
				`"drainTimeout":"5s"`, `"delayedCloseTimeout":"1s"`, `"connectTimeout":"3s"`}, wantNot: []string{`"connectTimeout":"2s"`}, countLog: -1},
		{name: "connection limits and buffers", opt: Options{ClusterMaxRequestsPerConnection: 50, ClusterBufferLimit: 32768, HTTP2MaxConcurrentStreams: 100, ListenerBufferLimit: 65536},
			want: []string{`"perConnectionBufferLimitBytes":32768`, `"commonHttpProtocolOptions":{"maxRequestsPerConnection":50}`,
				`"http2ProtocolOptions":{"maxConcurrentStreams":100}`, `"perConnectionBufferLimitBytes":65536`}, countLog: -1},
		{name: "only HTTP/1.1", opt: Options{HTTPVersions: []string{"http/1.1"}},
			want: []string{`"codecType":"HTTP1"`, `"alpnProtocols":["http/1.1"]`}, wantNot: []string{`"h2"`}, countLog: -1},
		{name: "only HTTP/2", opt: Options{HTTPVersions: []string{"http/2"}},
			want: []string{`"codecType":"HTTP2"`, `"alpnProtocols":["h2"]`}, countLog: -1},
		{name: "ciphers, hops, server header, slashes, PROXY protocol", opt: Options{
			CipherSuites: []string{"[ECDHE-RSA-AES128-GCM-SHA256|ECDHE-RSA-CHACHA20-POLY1305]"}, XffNumTrustedHops: 2, ServerHeaderTransformation: "pass_through",
			DisableMergeSlashes: true, UseProxyProto: true},
			want: []string{`"cipherSuites":["[ECDHE-RSA-AES128-GCM-SHA256|ECDHE-RSA-CHACHA20-POLY1305]"]`, `"xffNumTrustedHops":2`, `"serverHeaderTransformation":"PASS_THROUGH"`,
				`"listenerFilters":[{"name":"envoy.filters.listener.proxy_protocol"`,
				`{"name":"envoy.filters.listener.proxy_protocol","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"}},{"name":"envoy.filters.listener.tls_inspector"`},
			wantNot: []string{`"mergeSlashes"`}, countLog: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := renderListeners(t, tc.opt)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("xDS lacks %s\n--- got:\n%s", w, got)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(got, w) {
					t.Errorf("xDS has %s\n--- got:\n%s", w, got)
				}
			}
			if n := strings.Count(got, `"accessLog":[`); tc.countLog >= 0 && n != tc.countLog {
				t.Errorf("%d access logs, want %d\n%s", n, tc.countLog, got)
			}
		})
	}
}
