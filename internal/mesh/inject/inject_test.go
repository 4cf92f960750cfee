package inject

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/legateproxy/legate/internal/mesh"
)

var testConfig = Config{Image: "example.com/legate:test", XDSAddress: "xds.example:8001", CAAddress: "ca.example:15012"}

func basePod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx"}}},
	}
}

// applyToPod applies ops to pod as the API server would.
func applyToPod(t *testing.T, pod *corev1.Pod, ops []Op) *corev1.Pod {
	t.Helper()
	raw, _ := json.Marshal(pod)
	var doc map[string]any
	json.Unmarshal(raw, &doc)
	if err := Apply(doc, ops); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	raw, _ = json.Marshal(doc)
	var out corev1.Pod
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func TestRequired(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*corev1.Pod)
		reason string // "" = inject
	}{
		{"plain", func(*corev1.Pod) {}, ""},
		{"hostNetwork", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "host_network"},
		{"kube-system", func(p *corev1.Pod) { p.Namespace = "kube-system" }, "ignored_namespace"},
		{"status annotation", func(p *corev1.Pod) { p.Annotations = map[string]string{mesh.StatusAnnotation: "{}"} }, "already_injected"},
		{"istio status", func(p *corev1.Pod) { p.Annotations = map[string]string{mesh.IstioStatusAnnotation: "{}"} }, "already_injected"},
		{"proxy container", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: mesh.ProxyContainer})
		}, "already_injected"},
		{"init container", func(p *corev1.Pod) { p.Spec.InitContainers = []corev1.Container{{Name: mesh.InitContainer}} }, "already_injected"},
		{"istio annotation false", func(p *corev1.Pod) { p.Annotations = map[string]string{mesh.IstioInjectAnnotation: "false"} }, "opt_out"},
		{"legate annotation false", func(p *corev1.Pod) { p.Annotations = map[string]string{mesh.InjectAnnotation: "false"} }, "opt_out"},
		{"annotation no", func(p *corev1.Pod) { p.Annotations = map[string]string{mesh.IstioInjectAnnotation: "no"} }, "opt_out"},
		{"annotation unknown value is out (Istio)", func(p *corev1.Pod) { p.Annotations = map[string]string{mesh.IstioInjectAnnotation: "maybe"} }, "opt_out"},
		{"label false", func(p *corev1.Pod) { p.Labels[mesh.IstioInjectAnnotation] = "false" }, "opt_out"},
		{"annotation true", func(p *corev1.Pod) { p.Annotations = map[string]string{mesh.IstioInjectAnnotation: "true"} }, ""},
		{"label true wins over annotation false", func(p *corev1.Pod) {
			p.Labels[mesh.IstioInjectAnnotation] = "true"
			p.Annotations = map[string]string{mesh.IstioInjectAnnotation: "false"}
		}, ""},
		{"legate key before Istio's", func(p *corev1.Pod) {
			p.Annotations = map[string]string{mesh.InjectAnnotation: "false", mesh.IstioInjectAnnotation: "true"}
		}, "opt_out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := basePod()
			tt.mod(p)
			got := Required(p)
			switch {
			case tt.reason == "" && got != nil:
				t.Fatalf("skipped: %+v", got)
			case tt.reason != "" && (got == nil || got.Reason != tt.reason):
				t.Fatalf("got %+v, want reason %s", got, tt.reason)
			}
			// Patch agrees, and a skipped pod gets no patch.
			ops, skip, err := Patch(p, testConfig)
			if err != nil || (skip == nil) != (tt.reason == "") || (skip != nil && ops != nil) {
				t.Fatalf("Patch: ops=%d skip=%+v err=%v", len(ops), skip, err)
			}
		})
	}
}

func TestIptablesArgs(t *testing.T) {
	base := []string{"iptables", "--proxy-uid", "1337", "--proxy-gid", "1337", "--outbound-port", "15001", "--inbound-port", "15006"}
	tests := []struct {
		name string
		ann  map[string]string
		want []string // after base
		err  string   // annotation named in the error
	}{
		{"defaults", nil, []string{"--inbound-ports", "*", "--exclude-inbound-ports", "15090,15021,15020", "--outbound-cidrs", "*", "--ipv6", "false"}, ""},
		{"include inbound list", map[string]string{mesh.IncludeInboundPorts: "80, 8080"},
			[]string{"--inbound-ports", "80,8080", "--exclude-inbound-ports", "15090,15021,15020", "--outbound-cidrs", "*", "--ipv6", "false"}, ""},
		{"include inbound empty intercepts none", map[string]string{mesh.IncludeInboundPorts: ""},
			[]string{"--inbound-ports", "", "--exclude-inbound-ports", "15090,15021,15020", "--outbound-cidrs", "*", "--ipv6", "false"}, ""},
		{"exclude inbound appended, deduplicated", map[string]string{mesh.ExcludeInboundPorts: "9000,15021"},
			[]string{"--inbound-ports", "*", "--exclude-inbound-ports", "15090,15021,15020,9000", "--outbound-cidrs", "*", "--ipv6", "false"}, ""},
		{"outbound ranges", map[string]string{mesh.IncludeOutboundIPRanges: "10.0.0.0/8,192.168.1.7/16", mesh.ExcludeOutboundIPRanges: "10.96.0.1/32",
			mesh.ExcludeOutboundPorts: "5432"},
			[]string{"--inbound-ports", "*", "--exclude-inbound-ports", "15090,15021,15020", "--outbound-cidrs", "10.0.0.0/8,192.168.0.0/16", "--ipv6", "false",
				"--exclude-outbound-cidrs", "10.96.0.1/32", "--exclude-outbound-ports", "5432"}, ""},
		{"bad port", map[string]string{mesh.IncludeInboundPorts: "80,http"}, nil, mesh.IncludeInboundPorts},
		{"port out of range", map[string]string{mesh.ExcludeOutboundPorts: "70000"}, nil, mesh.ExcludeOutboundPorts},
		{"star not in exclude", map[string]string{mesh.ExcludeInboundPorts: "*"}, nil, mesh.ExcludeInboundPorts},
		{"bad CIDR", map[string]string{mesh.IncludeOutboundIPRanges: "10.0.0.0"}, nil, mesh.IncludeOutboundIPRanges},
		{"star not in exclude CIDRs", map[string]string{mesh.ExcludeOutboundIPRanges: "*"}, nil, mesh.ExcludeOutboundIPRanges},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := iptablesArgs(tt.ann)
			if tt.err != "" {
				var inv *InvalidError
				if !errors.As(err, &inv) || !strings.Contains(inv.Path, tt.err) {
					t.Fatalf("err = %v, want an InvalidError naming %s", err, tt.err)
				}
				// The webhook refuses such a pod.
				p := basePod()
				p.Annotations = tt.ann
				if _, _, err := Patch(p, testConfig); err == nil {
					t.Fatal("Patch accepted it")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := append(append([]string{}, base...), tt.want...); !reflect.DeepEqual(got, want) {
				t.Fatalf("args\n got %q\nwant %q", got, want)
			}
			p := basePod()
			p.Annotations = tt.ann
			ops, _, err := Patch(p, testConfig)
			if err != nil {
				t.Fatal(err)
			}
			if out := applyToPod(t, p, ops); !reflect.DeepEqual(out.Spec.InitContainers[0].Args, got) {
				t.Fatalf("init container args %q", out.Spec.InitContainers[0].Args)
			}
		})
	}
}

func TestPatch(t *testing.T) {
	p := basePod()
	p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "busybox"}}
	p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	ops, skip, err := Patch(p, testConfig)
	if err != nil || skip != nil {
		t.Fatalf("Patch: %v %+v", err, skip)
	}
	out := applyToPod(t, p, ops)
	names := func(cs []corev1.Container) (n []string) {
		for _, c := range cs {
			n = append(n, c.Name)
		}
		return n
	}
	if got := names(out.Spec.InitContainers); !reflect.DeepEqual(got, []string{mesh.InitContainer, "migrate"}) {
		t.Errorf("init containers %v", got)
	}
	if got := names(out.Spec.Containers); !reflect.DeepEqual(got, []string{"app", mesh.ProxyContainer}) {
		t.Errorf("containers %v", got)
	}
	init := out.Spec.InitContainers[0]
	sc := init.SecurityContext
	if init.Image != testConfig.Image || *sc.RunAsUser != 0 || *sc.RunAsNonRoot || !reflect.DeepEqual(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) {
		t.Errorf("init container %+v", init)
	}
	px := out.Spec.Containers[1]
	if !reflect.DeepEqual(px.Args, []string{"sidecar", "--xds-address", "xds.example:8001", "--ca-address", "ca.example:15012"}) {
		t.Errorf("proxy args %q", px.Args)
	}
	env := map[string]string{}
	for _, e := range px.Env {
		env[e.Name] = e.ValueFrom.FieldRef.FieldPath
	}
	if !reflect.DeepEqual(env, map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "INSTANCE_IP": "status.podIP", "SERVICE_ACCOUNT": "spec.serviceAccountName"}) {
		t.Errorf("proxy env %v", env)
	}
	if *px.SecurityContext.RunAsUser != mesh.ProxyUID || *px.SecurityContext.RunAsGroup != mesh.ProxyGID {
		t.Errorf("proxy security context %+v", px.SecurityContext)
	}
	if px.ReadinessProbe.HTTPGet.Path != "/healthz/ready" || px.ReadinessProbe.HTTPGet.Port.IntValue() != mesh.ReadinessPort {
		t.Errorf("readiness probe %+v", px.ReadinessProbe.HTTPGet)
	}
	if len(px.Ports) != 1 || px.Ports[0].Name != "http-envoy-prom" || px.Ports[0].ContainerPort != mesh.StatsPort {
		t.Errorf("ports %+v", px.Ports)
	}
	if px.Lifecycle != nil {
		t.Error("postStart hook without holdApplicationUntilProxyStarts")
	}
	mounts := map[string]string{}
	for _, m := range px.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	if mounts[TokenVolume] != "/var/run/secrets/tokens" || mounts[RootCertVolume] != "/var/run/secrets/legate" || mounts[WorkloadSocketVolume] != "/var/run/secrets/workload-spiffe-uds" {
		t.Errorf("mounts %v", mounts)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range out.Spec.Volumes {
		vols[v.Name] = v
	}
	if len(out.Spec.Volumes) != 5 || out.Spec.Volumes[0].Name != "data" {
		t.Errorf("volumes %+v", out.Spec.Volumes)
	}
	tok := vols[TokenVolume].Projected.Sources[0].ServiceAccountToken
	if tok.Audience != mesh.TokenAudience || tok.Path != mesh.TokenFile {
		t.Errorf("token volume %+v", tok)
	}
	if vols[RootCertVolume].ConfigMap.Name != mesh.RootCertConfigMap || vols[WorkloadSocketVolume].EmptyDir == nil {
		t.Errorf("volumes %+v", vols)
	}
	var st Status
	if err := json.Unmarshal([]byte(out.Annotations[mesh.StatusAnnotation]), &st); err != nil {
		t.Fatalf("status annotation %q: %v", out.Annotations[mesh.StatusAnnotation], err)
	}
	if !reflect.DeepEqual(st, Status{InitContainers: []string{mesh.InitContainer}, Containers: []string{mesh.ProxyContainer},
		Volumes: []string{WorkloadSocketVolume, StateVolume, TokenVolume, RootCertVolume}, Revision: "default"}) {
		t.Errorf("status %+v", st)
	}
	if out.Annotations[DefaultContainerAnnotation] != "app" {
		t.Errorf("default container %q", out.Annotations[DefaultContainerAnnotation])
	}
	if out.Labels[mesh.TLSModeLabel] != "istio" || out.Labels[mesh.CanonicalNameLabel] != "web" || out.Labels[mesh.CanonicalRevisionLabel] != "latest" || out.Labels["app"] != "web" {
		t.Errorf("labels %v", out.Labels)
	}
	// The result counts as injected: a second pass changes nothing.
	if _, skip, _ := Patch(out, testConfig); skip == nil || skip.Reason != "already_injected" {
		t.Errorf("second Patch: %+v", skip)
	}
}

func TestPatchOptions(t *testing.T) {
	tests := []struct {
		name  string
		cfg   func(*Config)
		mod   func(*corev1.Pod)
		check func(t *testing.T, p *corev1.Pod)
		err   string
	}{
		{name: "hold by annotation", mod: func(p *corev1.Pod) { p.Annotations = map[string]string{mesh.HoldApplication: "true"} },
			check: func(t *testing.T, p *corev1.Pod) {
				c := p.Spec.Containers[0]
				if c.Name != mesh.ProxyContainer || c.Lifecycle == nil || c.Lifecycle.PostStart.Exec.Command[1] != "wait" {
					t.Fatalf("first container %+v", c)
				}
				if p.Annotations[DefaultContainerAnnotation] != "app" {
					t.Fatalf("default container %q", p.Annotations[DefaultContainerAnnotation])
				}
			}},
		{name: "hold by config, annotation false wins", cfg: func(c *Config) { c.HoldApplicationUntilProxyStarts = true },
			mod: func(p *corev1.Pod) { p.Annotations = map[string]string{mesh.HoldApplication: "false"} },
			check: func(t *testing.T, p *corev1.Pod) {
				if p.Spec.Containers[0].Name != "app" {
					t.Fatal("proxy first")
				}
			}},
		{name: "hold by config", cfg: func(c *Config) { c.HoldApplicationUntilProxyStarts = true },
			check: func(t *testing.T, p *corev1.Pod) {
				if p.Spec.Containers[0].Name != mesh.ProxyContainer {
					t.Fatal("proxy not first")
				}
			}},
		{name: "bad hold value", mod: func(p *corev1.Pod) { p.Annotations = map[string]string{mesh.HoldApplication: "yes please"} }, err: mesh.HoldApplication},
		{name: "image and resources", mod: func(p *corev1.Pod) {
			p.Annotations = map[string]string{ProxyImageAnnotation: "other/img:1", ProxyCPUAnnotation: "300m", ProxyMemoryLimitAnnotation: "2Gi"}
		}, check: func(t *testing.T, p *corev1.Pod) {
			c := p.Spec.Containers[1]
			if c.Image != "other/img:1" || c.Resources.Requests.Cpu().String() != "300m" || c.Resources.Limits.Memory().String() != "2Gi" {
				t.Fatalf("proxy %s %v", c.Image, c.Resources)
			}
		}},
		{name: "bad quantity", mod: func(p *corev1.Pod) { p.Annotations = map[string]string{ProxyCPUAnnotation: "lots"} }, err: ProxyCPUAnnotation},
		{name: "unsupported Istio annotation", mod: func(p *corev1.Pod) { p.Annotations = map[string]string{"sidecar.istio.io/bootstrapOverride": "x"} }, err: "sidecar.istio.io/bootstrapOverride"},
		{name: "proxy config unsupported", mod: func(p *corev1.Pod) { p.Annotations = map[string]string{"proxy.istio.io/config": "{}"} }, err: "proxy.istio.io/config"},
		{name: "TPROXY unsupported", mod: func(p *corev1.Pod) { p.Annotations = map[string]string{InterceptionModeAnnotation: "TPROXY"} }, err: InterceptionModeAnnotation},
		{name: "probe rewrite unsupported", mod: func(p *corev1.Pod) { p.Annotations = map[string]string{RewriteProbesAnnotation: "true"} }, err: RewriteProbesAnnotation},
		{name: "probe rewrite off is fine", mod: func(p *corev1.Pod) { p.Annotations = map[string]string{RewriteProbesAnnotation: "false"} }, check: func(*testing.T, *corev1.Pod) {}},
		{name: "volume name taken", mod: func(p *corev1.Pod) { p.Spec.Volumes = []corev1.Volume{{Name: TokenVolume}} }, err: "spec.volumes[" + TokenVolume + "]"},
		{name: "canonical labels kept and derived", mod: func(p *corev1.Pod) {
			p.Labels = map[string]string{"app.kubernetes.io/name": "shop-web", "version": "v2", mesh.TLSModeLabel: "disabled"}
		}, check: func(t *testing.T, p *corev1.Pod) {
			if p.Labels[mesh.CanonicalNameLabel] != "shop-web" || p.Labels[mesh.CanonicalRevisionLabel] != "v2" || p.Labels[mesh.TLSModeLabel] != "disabled" {
				t.Fatalf("labels %v", p.Labels)
			}
		}},
		{name: "no labels: from ReplicaSet owner", mod: func(p *corev1.Pod) {
			yes := true
			p.Name, p.GenerateName, p.Labels = "", "web-7d4f-", map[string]string{"pod-template-hash": "7d4f"}
			p.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-7d4f", Controller: &yes}}
		}, check: func(t *testing.T, p *corev1.Pod) {
			if p.Labels[mesh.CanonicalNameLabel] != "web" {
				t.Fatalf("labels %v", p.Labels)
			}
		}},
		{name: "nil labels", mod: func(p *corev1.Pod) { p.Labels = nil }, check: func(t *testing.T, p *corev1.Pod) {
			if p.Labels[mesh.CanonicalNameLabel] != "web" || p.Labels[mesh.TLSModeLabel] != "istio" {
				t.Fatalf("labels %v", p.Labels)
			}
		}},
		{name: "annotation key with slash escaped", mod: func(p *corev1.Pod) { p.Annotations = map[string]string{"a/b~c": "1"} },
			check: func(t *testing.T, p *corev1.Pod) {
				if p.Annotations["a/b~c"] != "1" || p.Annotations[mesh.StatusAnnotation] == "" {
					t.Fatalf("annotations %v", p.Annotations)
				}
			}},
		{name: "bad config", cfg: func(c *Config) { c.XDSAddress = "no-port" }, err: "xDS address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			p := basePod()
			if tt.mod != nil {
				tt.mod(p)
			}
			ops, skip, err := Patch(p, cfg)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one naming %s", err, tt.err)
				}
				return
			}
			if err != nil || skip != nil {
				t.Fatalf("Patch: %v %+v", err, skip)
			}
			tt.check(t, applyToPod(t, p, ops))
		})
	}
}

func TestApply(t *testing.T) {
	doc := map[string]any{"a": map[string]any{"list": []any{1.0, 2.0}}}
	for _, tt := range []struct {
		op   Op
		want string
		err  bool
	}{
		{Op{"add", "/a/list/0", 0.0}, `{"a":{"list":[0,1,2]}}`, false},
		{Op{"add", "/a/list/-", 3.0}, `{"a":{"list":[0,1,2,3]}}`, false},
		{Op{"add", "/a/x~1y", "v"}, `{"a":{"list":[0,1,2,3],"x/y":"v"}}`, false},
		{Op{"add", "/a/list/9", 1.0}, "", true},
		{Op{"add", "/nope/x", 1.0}, "", true},
		{Op{"remove", "/a", nil}, "", true},
		{Op{"add", "a", nil}, "", true},
	} {
		err := Apply(doc, []Op{tt.op})
		if tt.err {
			if err == nil {
				t.Errorf("%+v: no error", tt.op)
			}
			continue
		}
		got, _ := json.Marshal(doc)
		if err != nil || string(got) != tt.want {
			t.Errorf("%+v: %s %v, want %s", tt.op, got, err, tt.want)
		}
	}
}

// The sidecar asks for an identity in the CA's trust domain: a
// controller with another --trust-domain passes it on.
func TestSidecarArgsTrustDomain(t *testing.T) {
	for _, c := range []struct {
		td   string
		want []string
	}{
		{"", []string{"sidecar", "--xds-address", "x:1", "--ca-address", "c:2"}},
		{"cluster.local", []string{"sidecar", "--xds-address", "x:1", "--ca-address", "c:2"}},
		{"prod.example", []string{"sidecar", "--xds-address", "x:1", "--ca-address", "c:2", "--trust-domain", "prod.example"}},
	} {
		if got := sidecarArgs(Config{XDSAddress: "x:1", CAAddress: "c:2", TrustDomain: c.td}); !reflect.DeepEqual(got, c.want) {
			t.Errorf("trust domain %q: %q, want %q", c.td, got, c.want)
		}
	}
}
