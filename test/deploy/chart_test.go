package deploy

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/legateproxy/legate/internal/testutil"
)

// rendered is the chart as `helm template` renders it, by kind and name.
type rendered struct {
	objs []unstructured.Unstructured
}

func (r rendered) get(kind, name string) *unstructured.Unstructured {
	for i := range r.objs {
		if r.objs[i].GetKind() == kind && r.objs[i].GetName() == name {
			return &r.objs[i]
		}
	}
	return nil
}

func (r rendered) count(kind string) int {
	n := 0
	for _, o := range r.objs {
		if o.GetKind() == kind {
			n++
		}
	}
	return n
}

// as converts a rendered object to its typed API struct, failing on a
// missing object.
func as[T any](t *testing.T, u *unstructured.Unstructured, what string) *T {
	t.Helper()
	if u == nil {
		t.Fatalf("%s is not rendered", what)
	}
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return out
}

// helmTemplate renders charts/legate (release legate, namespace legate)
// with extra helm arguments.
func helmTemplate(t *testing.T, args ...string) (rendered, error) {
	t.Helper()
	root := testutil.RepoRoot(t)
	cmd := exec.Command(helm(t), append([]string{"template", "legate", filepath.Join(root, "charts", "legate"), "-n", "legate"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return rendered{}, errors.New(stderr.String())
	}
	var r rendered
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		var u unstructured.Unstructured
		if err := d.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return r, nil
			}
			t.Fatalf("helm template output: %v", err)
		}
		if u.Object != nil {
			r.objs = append(r.objs, u)
		}
	}
}

func ciValues(t *testing.T, name string) string {
	return filepath.Join(testutil.RepoRoot(t), "charts", "legate", "ci", name)
}

// podSpecs returns the controller's, the proxy's and the certgen Job's pod
// templates (nil when not rendered).
func podSpecs(t *testing.T, r rendered) (controller, proxy, certgen *corev1.PodTemplateSpec) {
	t.Helper()
	if u := r.get("Deployment", "legate-controller"); u != nil {
		controller = &as[appsv1.Deployment](t, u, "controller Deployment").Spec.Template
	}
	if u := r.get("DaemonSet", "legate-proxy"); u != nil {
		proxy = &as[appsv1.DaemonSet](t, u, "proxy DaemonSet").Spec.Template
	} else if u := r.get("Deployment", "legate-proxy"); u != nil {
		proxy = &as[appsv1.Deployment](t, u, "proxy Deployment").Spec.Template
	}
	if u := r.get("Job", "legate-certgen"); u != nil {
		certgen = &as[batchv1.Job](t, u, "certgen Job").Spec.Template
	}
	if proxy == nil {
		t.Fatal("no proxy workload rendered")
	}
	return controller, proxy, certgen
}

func containerPort(c corev1.Container, name string) *corev1.ContainerPort {
	for i := range c.Ports {
		if c.Ports[i].Name == name {
			return &c.Ports[i]
		}
	}
	return nil
}

// images lists every container's image and pull policy of a pod template.
func images(p *corev1.PodTemplateSpec) map[string]string {
	out := map[string]string{}
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		out[c.Name] = c.Image + " " + string(c.ImagePullPolicy)
	}
	return out
}

func argValue(c corev1.Container, flag string) string {
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

var (
	controllerScrape = map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "8000"}
	proxyScrape      = map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "8002", "prometheus.io/path": "/stats/prometheus"}
)

// TestChartValues renders the chart with its operability values
// (scheduling, images, host ports and network, Prometheus annotations,
// ServiceMonitors) and checks the rendered objects field by field.
func TestChartValues(t *testing.T) {
	const defaultImage = "ghcr.io/legateproxy/legate:latest IfNotPresent"
	for _, tc := range []struct {
		name  string
		args  []string
		check func(t *testing.T, r rendered)
	}{{
		name: "defaults",
		check: func(t *testing.T, r rendered) {
			c, p, cg := podSpecs(t, r)
			if !reflect.DeepEqual(c.Annotations, controllerScrape) {
				t.Errorf("controller pod annotations %v, want %v", c.Annotations, controllerScrape)
			}
			if !reflect.DeepEqual(p.Annotations, proxyScrape) {
				t.Errorf("proxy pod annotations %v, want %v", p.Annotations, proxyScrape)
			}
			for name, s := range map[string]*corev1.PodTemplateSpec{"controller": c, "proxy": p, "certgen": cg} {
				if s.Spec.NodeSelector != nil || s.Spec.Tolerations != nil || s.Spec.Affinity != nil || s.Spec.PriorityClassName != "" || s.Spec.ImagePullSecrets != nil || s.Spec.HostNetwork || s.Spec.DNSPolicy != "" {
					t.Errorf("%s pod: scheduling/network fields set by default: %+v", name, s.Spec)
				}
				for cn, img := range images(s) {
					if img != defaultImage {
						t.Errorf("%s/%s image %q, want %q", name, cn, img, defaultImage)
					}
				}
			}
			for _, port := range p.Spec.Containers[0].Ports {
				if port.HostPort != 0 {
					t.Errorf("proxy port %s has hostPort %d by default", port.Name, port.HostPort)
				}
			}
			if n := r.count("ServiceMonitor"); n != 0 {
				t.Errorf("%d ServiceMonitors rendered by default (the CRD may not exist)", n)
			}
			if r.get("Service", "legate-proxy-metrics") != nil || r.get("Service", "legate-controller-metrics") != nil {
				t.Error("metrics Services rendered without metrics.serviceMonitor.enabled")
			}
		},
	}, {
		name: "operability values",
		args: []string{"-f", ciValues(t, "operability-values.yaml")},
		check: func(t *testing.T, r rendered) {
			c, p, cg := podSpecs(t, r)
			want := map[string]string{"example.com/team": "edge", "prometheus.io/scrape": "true", "prometheus.io/port": "8000"}
			if !reflect.DeepEqual(c.Annotations, want) {
				t.Errorf("controller pod annotations %v, want %v", c.Annotations, want)
			}
			// podAnnotations win over the default scrape annotation.
			want = map[string]string{"prometheus.io/scrape": "false", "prometheus.io/port": "8002", "prometheus.io/path": "/stats/prometheus"}
			if !reflect.DeepEqual(p.Annotations, want) {
				t.Errorf("proxy pod annotations %v, want %v", p.Annotations, want)
			}
			if c.Labels["example.com/tier"] != "control-plane" || p.Labels["example.com/tier"] != "edge" || p.Labels["app.kubernetes.io/component"] != "proxy" {
				t.Errorf("pod labels: controller %v, proxy %v", c.Labels, p.Labels)
			}
			if c.Spec.PriorityClassName != "system-cluster-critical" || p.Spec.PriorityClassName != "system-node-critical" {
				t.Errorf("priorityClassName: controller %q, proxy %q", c.Spec.PriorityClassName, p.Spec.PriorityClassName)
			}
			if !reflect.DeepEqual(c.Spec.NodeSelector, map[string]string{"kubernetes.io/os": "linux"}) || !reflect.DeepEqual(p.Spec.NodeSelector, map[string]string{"node-role.example.com/ingress": "true"}) {
				t.Errorf("nodeSelector: controller %v, proxy %v", c.Spec.NodeSelector, p.Spec.NodeSelector)
			}
			secs := int64(300)
			if want := []corev1.Toleration{{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}; !reflect.DeepEqual(c.Spec.Tolerations, want) {
				t.Errorf("controller tolerations %+v, want %+v", c.Spec.Tolerations, want)
			}
			if want := []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "ingress", Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &secs}}; !reflect.DeepEqual(p.Spec.Tolerations, want) {
				t.Errorf("proxy tolerations %+v, want %+v", p.Spec.Tolerations, want)
			}
			if a := c.Spec.Affinity; a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
				a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" || a.NodeAffinity != nil {
				t.Errorf("controller affinity %+v", a)
			}
			if a := p.Spec.Affinity; a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil ||
				!reflect.DeepEqual(a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0].Values, []string{"amd64", "arm64"}) || a.PodAntiAffinity != nil {
				t.Errorf("proxy affinity %+v", a)
			}
			// hostPorts: the node's 80/443 to the proxy's 8080/8443, as
			// Contour's Envoy DaemonSet; the stats port stays off the node.
			pc := p.Spec.Containers[0]
			for name, want := range map[string][2]int32{"http": {8080, 80}, "https": {8443, 443}, "health": {8002, 0}} {
				if got := containerPort(pc, name); got == nil || got.ContainerPort != want[0] || got.HostPort != want[1] {
					t.Errorf("proxy port %s = %+v, want containerPort %d hostPort %d", name, got, want[0], want[1])
				}
			}
			if p.Spec.HostNetwork || p.Spec.DNSPolicy != "" {
				t.Errorf("hostPorts alone set hostNetwork %v dnsPolicy %q", p.Spec.HostNetwork, p.Spec.DNSPolicy)
			}
			// Images: controller.image and proxy.image override image field
			// by field; certgen is the controller's, the bootstrap init
			// container and the mesh's sidecars the proxy's.
			wantImg := map[string]string{"controller": "ghcr.io/legateproxy/legate:v0.1.0-controller IfNotPresent"}
			if got := images(c); !reflect.DeepEqual(got, wantImg) {
				t.Errorf("controller images %v, want %v", got, wantImg)
			}
			wantImg = map[string]string{"certgen": "ghcr.io/legateproxy/legate:v0.1.0-controller IfNotPresent"}
			if got := images(cg); !reflect.DeepEqual(got, wantImg) {
				t.Errorf("certgen images %v, want %v", got, wantImg)
			}
			wantImg = map[string]string{"bootstrap": "registry.example.com/legate-proxy:latest Always", "proxy": "registry.example.com/legate-proxy:latest Always"}
			if got := images(p); !reflect.DeepEqual(got, wantImg) {
				t.Errorf("proxy images %v, want %v", got, wantImg)
			}
			if img, pol := argValue(c.Spec.Containers[0], "--sidecar-image"), argValue(c.Spec.Containers[0], "--sidecar-image-pull-policy"); img != "registry.example.com/legate-proxy:latest" || pol != "Always" {
				t.Errorf("sidecar image %q %q, want proxy.image", img, pol)
			}
			wantSecrets := []corev1.LocalObjectReference{{Name: "regcred"}, {Name: "other-regcred"}}
			for name, s := range map[string]*corev1.PodTemplateSpec{"controller": c, "proxy": p, "certgen": cg} {
				if !reflect.DeepEqual(s.Spec.ImagePullSecrets, wantSecrets) {
					t.Errorf("%s imagePullSecrets %v, want %v", name, s.Spec.ImagePullSecrets, wantSecrets)
				}
			}
			// ServiceMonitors: each selects exactly one Service of the
			// release (its own metrics Service), whose metrics port reaches
			// the component's pods on the port its annotations name.
			if n := r.count("ServiceMonitor"); n != 2 {
				t.Fatalf("%d ServiceMonitors, want 2", n)
			}
			for _, comp := range []struct {
				name, path string
				port       int32
				pods       *corev1.PodTemplateSpec
			}{{"controller", "/metrics", 8000, c}, {"proxy", "/stats/prometheus", 8002, p}} {
				sm := r.get("ServiceMonitor", "legate-"+comp.name)
				if sm == nil {
					t.Errorf("no ServiceMonitor legate-%s", comp.name)
					continue
				}
				if sm.GetAPIVersion() != "monitoring.coreos.com/v1" || sm.GetNamespace() != "monitoring" || sm.GetLabels()["release"] != "kube-prometheus-stack" || sm.GetLabels()["app.kubernetes.io/name"] != "legate" {
					t.Errorf("ServiceMonitor %s: %s in %q, labels %v", sm.GetName(), sm.GetAPIVersion(), sm.GetNamespace(), sm.GetLabels())
				}
				if ns, _, _ := unstructured.NestedStringSlice(sm.Object, "spec", "namespaceSelector", "matchNames"); !reflect.DeepEqual(ns, []string{"legate"}) {
					t.Errorf("ServiceMonitor %s namespaceSelector %v, want the release namespace", sm.GetName(), ns)
				}
				eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
				want := []any{map[string]any{"port": "metrics", "path": comp.path, "interval": "30s", "scrapeTimeout": "10s"}}
				if !reflect.DeepEqual(eps, want) {
					t.Errorf("ServiceMonitor %s endpoints %v, want %v", sm.GetName(), eps, want)
				}
				sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
				var matched []*corev1.Service
				for i := range r.objs {
					if r.objs[i].GetKind() == "Service" && labels.SelectorFromSet(sel).Matches(labels.Set(r.objs[i].GetLabels())) {
						matched = append(matched, as[corev1.Service](t, &r.objs[i], "Service "+r.objs[i].GetName()))
					}
				}
				if len(matched) != 1 || matched[0].Name != "legate-"+comp.name+"-metrics" {
					names := []string{}
					for _, s := range matched {
						names = append(names, s.Name)
					}
					t.Errorf("ServiceMonitor %s selects Services %v, want only legate-%s-metrics", sm.GetName(), names, comp.name)
					continue
				}
				svc := matched[0]
				if svc.Spec.Type == corev1.ServiceTypeLoadBalancer || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].TargetPort.IntVal != comp.port {
					t.Errorf("Service %s: type %s ports %+v, want one metrics port to %d", svc.Name, svc.Spec.Type, svc.Spec.Ports, comp.port)
				}
				if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(comp.pods.Labels)) {
					t.Errorf("Service %s selector %v does not select the %s pods %v", svc.Name, svc.Spec.Selector, comp.name, comp.pods.Labels)
				}
				if comp.name == "controller" && comp.pods.Annotations["prometheus.io/port"] != "8000" || comp.name == "proxy" && comp.pods.Annotations["prometheus.io/port"] != "8002" {
					t.Errorf("%s: annotations %v disagree with the ServiceMonitor's port", comp.name, comp.pods.Annotations)
				}
			}
		},
	}, {
		name: "host network",
		args: []string{"-f", ciValues(t, "hostnetwork-values.yaml")},
		check: func(t *testing.T, r rendered) {
			_, p, _ := podSpecs(t, r)
			// On the host network the bootstrap's controller address (a
			// cluster DNS name) needs the cluster resolver.
			if !p.Spec.HostNetwork || p.Spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
				t.Errorf("hostNetwork %v dnsPolicy %q, want true ClusterFirstWithHostNet", p.Spec.HostNetwork, p.Spec.DNSPolicy)
			}
			for _, port := range p.Spec.Containers[0].Ports {
				if port.HostPort != 0 {
					t.Errorf("port %s: hostPort %d with hostNetwork", port.Name, port.HostPort)
				}
			}
		},
	}, {
		name: "host network, dnsPolicy set",
		args: []string{"--set", "proxy.hostNetwork=true", "--set", "proxy.dnsPolicy=Default", "--set", "proxy.kind=Deployment"},
		check: func(t *testing.T, r rendered) {
			_, p, _ := podSpecs(t, r)
			if !p.Spec.HostNetwork || p.Spec.DNSPolicy != corev1.DNSDefault {
				t.Errorf("hostNetwork %v dnsPolicy %q, want true Default", p.Spec.HostNetwork, p.Spec.DNSPolicy)
			}
		},
	}, {
		name: "host ports, custom",
		args: []string{"--set", "proxy.hostPorts.enable=true", "--set", "proxy.hostPorts.http=8000", "--set", "proxy.hostPorts.https=9443"},
		check: func(t *testing.T, r rendered) {
			_, p, _ := podSpecs(t, r)
			pc := p.Spec.Containers[0]
			if h, s := containerPort(pc, "http"), containerPort(pc, "https"); h == nil || h.HostPort != 8000 || s == nil || s.HostPort != 9443 {
				t.Errorf("host ports http %+v https %+v, want 8000 and 9443", h, s)
			}
		},
	}, {
		name: "standalone proxy",
		args: []string{"-f", ciValues(t, "standalone-values.yaml"), "--set", "proxy.podAnnotations.example\\.com/a=b", "--set", "proxy.image.tag=v2", "--set", "proxy.nodeSelector.pool=edge"},
		check: func(t *testing.T, r rendered) {
			c, p, _ := podSpecs(t, r)
			if c != nil {
				t.Error("controller rendered with controller.enabled false")
			}
			// No bootstrap, so no known stats listener: no scrape annotations.
			if want := map[string]string{"example.com/a": "b"}; !reflect.DeepEqual(p.Annotations, want) {
				t.Errorf("standalone proxy annotations %v, want %v", p.Annotations, want)
			}
			if want := map[string]string{"proxy": "ghcr.io/legateproxy/legate:v2 IfNotPresent"}; !reflect.DeepEqual(images(p), want) {
				t.Errorf("standalone proxy images %v, want %v", images(p), want)
			}
			if p.Spec.NodeSelector["pool"] != "edge" {
				t.Errorf("standalone proxy nodeSelector %v", p.Spec.NodeSelector)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := helmTemplate(t, tc.args...)
			if err != nil {
				t.Fatalf("helm template %v: %v", tc.args, err)
			}
			tc.check(t, r)
		})
	}
}

// TestChartValuesRefused checks values.schema.json (and the templates'
// own checks) refuse wrong values with an error naming the value.
func TestChartValuesRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"hostPorts.enable not a boolean", []string{"--set", "proxy.hostPorts.enable=yes"}, "/proxy/hostPorts/enable': got string, want boolean"},
		{"hostPorts.enabled misspelt", []string{"--set", "proxy.hostPorts.enabled=true"}, "additional properties 'enabled' not allowed"},
		{"hostPorts.http out of range", []string{"--set", "proxy.hostPorts.http=70000"}, "/proxy/hostPorts/http': maximum"},
		{"hostNetwork not a boolean", []string{"--set", "proxy.hostNetwork=1"}, "/proxy/hostNetwork': got number, want boolean"},
		{"dnsPolicy unknown", []string{"--set", "proxy.dnsPolicy=None"}, "/proxy/dnsPolicy': value must be one of"},
		{"nodeSelector a string", []string{"--set-json", `controller.nodeSelector="linux"`}, "/controller/nodeSelector': got string, want object"},
		{"nodeSelector value a number", []string{"--set-json", `proxy.nodeSelector={"a":1}`}, "/proxy/nodeSelector/a': got number, want string"},
		{"tolerations an object", []string{"--set-json", `proxy.tolerations={"key":"a"}`}, "/proxy/tolerations': got object, want array"},
		{"toleration operator unknown", []string{"--set-json", `controller.tolerations=[{"key":"a","operator":"In"}]`}, "/controller/tolerations/0/operator': value must be one of"},
		{"affinity unknown field", []string{"--set-json", `proxy.affinity={"nodeAfinity":{}}`}, "additional properties 'nodeAfinity' not allowed"},
		{"podAnnotations value a number", []string{"--set-json", `proxy.podAnnotations={"a":1}`}, "/proxy/podAnnotations/a': got number, want string"},
		{"podLabels overrides the selector", []string{"--set", `controller.podLabels.app\.kubernetes\.io/component=x`}, "/controller/podLabels/app.kubernetes.io~1component': false schema"},
		{"priorityClassName a number", []string{"--set-json", `proxy.priorityClassName=5`}, "/proxy/priorityClassName': got number, want string"},
		{"controller.image unknown field", []string{"--set", "controller.image.name=x"}, "additional properties 'name' not allowed"},
		{"proxy.image.tag empty", []string{"--set", "proxy.image.tag="}, "/proxy/image/tag': minLength"},
		{"imagePullSecrets a number", []string{"--set-json", `imagePullSecrets=[1]`}, "/imagePullSecrets/0': 'oneOf' failed"},
		{"serviceMonitor.enabled a string", []string{"--set-json", `metrics.serviceMonitor.enabled="true"`}, "/metrics/serviceMonitor/enabled': got string, want boolean"},
		{"serviceMonitor.interval not a duration", []string{"--set", "metrics.serviceMonitor.interval=thirty"}, "/metrics/serviceMonitor/interval': 'thirty' does not match pattern"},
		{"serviceMonitor.labels a list", []string{"--set-json", `metrics.serviceMonitor.labels=["a"]`}, "/metrics/serviceMonitor/labels': got array, want object"},
		{"hostNetwork with hostPorts", []string{"--set", "proxy.hostNetwork=true", "--set", "proxy.hostPorts.enable=true"}, "proxy.hostNetwork and proxy.hostPorts.enable exclude each other"},
		{"serviceMonitor without the controller", []string{"-f", ciValues(t, "standalone-values.yaml"), "--set", "metrics.serviceMonitor.enabled=true"}, "metrics.serviceMonitor.enabled needs controller.enabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helmTemplate(t, tc.args...)
			if err == nil {
				t.Fatalf("helm template %v rendered; want it refused", tc.args)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template %v: %v\nwant an error containing %q", tc.args, err, tc.want)
			}
		})
	}
	// helm lint runs the same schema.
	out, err := exec.Command(helm(t), "lint", "--strict", filepath.Join(testutil.RepoRoot(t), "charts", "legate"), "--set", "proxy.hostPorts.enable=yes").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "want boolean") {
		t.Errorf("helm lint with proxy.hostPorts.enable=yes: %v\n%s", err, out)
	}
}
