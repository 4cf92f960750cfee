// Package inject adds Legate's sidecar to pods, as Istio's sidecar
// injector does: an init container that runs `legate iptables` to
// redirect the pod's traffic, and a proxy container that runs `legate
// sidecar`. One function, Patch, decides and computes the change as a
// JSON patch; the admission webhook (Handler, served by `legate
// controller`) returns it to the API server, and `legate inject` (YAML)
// applies it to the pod templates of manifests, so both give the same
// pod.
//
// The controller also keeps the MutatingWebhookConfiguration that points
// the API server at it (WebhookConfig) carrying the CA of the webhook's
// serving certificate (CA).
package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/legateproxy/legate/internal/mesh"
)

// DefaultImage is the sidecar image when none is configured.
const DefaultImage = "ghcr.io/legateproxy/legate:latest"

// Volume names the injector adds (Istio's are istio-token,
// istiod-ca-cert, workload-socket and istio-envoy).
const (
	TokenVolume          = "legate-token"
	RootCertVolume       = "legate-ca-cert"
	WorkloadSocketVolume = "workload-socket"
	StateVolume          = "legate-state"
	// StateDir is a writable memory-backed folder for the proxy, whose
	// root file system is read-only: `legate sidecar` keeps its
	// bootstrap and workload certificate under it (default --state-dir
	// /var/run/legate/sidecar; Istio's is /etc/istio/proxy).
	StateDir = "/var/run/legate"
)

// Pod annotations read besides those in package mesh (Istio's names).
const (
	ProxyImageAnnotation       = "sidecar.istio.io/proxyImage"
	ProxyCPUAnnotation         = "sidecar.istio.io/proxyCPU"
	ProxyMemoryAnnotation      = "sidecar.istio.io/proxyMemory"
	ProxyCPULimitAnnotation    = "sidecar.istio.io/proxyCPULimit"
	ProxyMemoryLimitAnnotation = "sidecar.istio.io/proxyMemoryLimit"
	InterceptionModeAnnotation = "sidecar.istio.io/interceptionMode"
	RewriteProbesAnnotation    = "sidecar.istio.io/rewriteAppHTTPProbers"
	// DefaultContainerAnnotation is kubectl's: Istio sets it to the first
	// application container so `kubectl exec/logs` do not pick the proxy.
	DefaultContainerAnnotation = "kubectl.kubernetes.io/default-container"
)

// excludedInboundPorts are never intercepted inbound: the agent, the
// readiness probe and Prometheus stats (as Istio's injector passes them).
var excludedInboundPorts = []int{mesh.StatsPort, mesh.ReadinessPort, mesh.AgentPort}

// ignoredNamespaces are never injected (Istio's list).
var ignoredNamespaces = map[string]bool{"kube-system": true, "kube-public": true, "kube-node-lease": true}

// Config is what every injected pod gets.
type Config struct {
	// Image runs both containers (default DefaultImage).
	Image string
	// ImagePullPolicy of both containers; empty leaves the API server's
	// default.
	ImagePullPolicy corev1.PullPolicy
	// XDSAddress and CAAddress (HOST:PORT) are the controller's xDS and
	// certificate endpoints the sidecar dials.
	XDSAddress, CAAddress string
	// HoldApplicationUntilProxyStarts, for every pod, starts the proxy
	// before the application containers (the pod annotation
	// proxy.istio.io/holdApplicationUntilProxyStarts overrides it).
	HoldApplicationUntilProxyStarts bool
	// TrustDomain is the CA's SPIFFE trust domain, which the sidecar asks
	// its identity in (empty or cluster.local: the sidecar's default).
	TrustDomain string
}

// Validate checks the addresses and fills defaults.
func (c *Config) Validate() error {
	if c.Image == "" {
		c.Image = DefaultImage
	}
	for name, a := range map[string]string{"xDS address": c.XDSAddress, "CA address": c.CAAddress} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("sidecar %s %q: %w (use HOST:PORT)", name, a, err)
		}
	}
	switch c.ImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return fmt.Errorf("image pull policy %q: use Always, IfNotPresent or Never", c.ImagePullPolicy)
	}
	return nil
}

// Op is one JSON patch (RFC 6902) operation. The injector only adds.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// Status is the StatusAnnotation's value: what was injected (the shape
// of Istio's sidecar.istio.io/status).
type Status struct {
	InitContainers []string `json:"initContainers"`
	Containers     []string `json:"containers"`
	Volumes        []string `json:"volumes"`
	Revision       string   `json:"revision"`
}

// Skip says why a pod is left alone; Reason is a short metric label.
type Skip struct {
	Reason, Message string
}

// InvalidError is a pod the injector refuses: a bad or unsupported
// annotation. Path names the field to fix.
type InvalidError struct {
	Path, Message string
}

func (e *InvalidError) Error() string { return e.Path + ": " + e.Message }

// Required reports whether pod should be injected, and if not why. The
// webhook configuration's namespace and object selectors have already
// chosen the pods the API server sends; this applies the rules that
// selectors cannot (as Istio's injectRequired).
func Required(pod *corev1.Pod) *Skip {
	if pod.Spec.HostNetwork {
		return &Skip{"host_network", "pod uses the host network"}
	}
	if ignoredNamespaces[pod.Namespace] {
		return &Skip{"ignored_namespace", "namespace " + pod.Namespace + " is never injected"}
	}
	if _, ok := pod.Annotations[mesh.StatusAnnotation]; ok {
		return &Skip{"already_injected", "pod has annotation " + mesh.StatusAnnotation}
	}
	if _, ok := pod.Annotations[mesh.IstioStatusAnnotation]; ok {
		return &Skip{"already_injected", "pod was injected by Istio (annotation " + mesh.IstioStatusAnnotation + ")"}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == mesh.ProxyContainer {
			return &Skip{"already_injected", "pod has container " + mesh.ProxyContainer}
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == mesh.InitContainer {
			return &Skip{"already_injected", "pod has init container " + mesh.InitContainer}
		}
	}
	// Labels first (Istio's precedence), then annotations; Legate's key
	// before Istio's.
	for _, src := range []struct {
		kind string
		m    map[string]string
	}{{"label", pod.Labels}, {"annotation", pod.Annotations}} {
		for _, k := range []string{mesh.InjectAnnotation, mesh.IstioInjectAnnotation} {
			v, ok := src.m[k]
			if !ok {
				continue
			}
			// Istio: y/yes/true/on inject; any other value opts out.
			switch strings.ToLower(v) {
			case "y", "yes", "true", "on":
				return nil
			default:
				return &Skip{"opt_out", fmt.Sprintf("pod %s %s=%q", src.kind, k, v)}
			}
		}
	}
	return nil
}

// handled are the annotations under Istio's and Legate's sidecar
// prefixes that the injector reads; any other there is an error (it
// would change behaviour if it were Istio's injector).
var handled = map[string]bool{
	mesh.InjectAnnotation: true, mesh.IstioInjectAnnotation: true, mesh.StatusAnnotation: true, mesh.IstioStatusAnnotation: true,
	mesh.IncludeOutboundIPRanges: true, mesh.ExcludeOutboundIPRanges: true, mesh.IncludeInboundPorts: true,
	mesh.ExcludeInboundPorts: true, mesh.ExcludeOutboundPorts: true, mesh.HoldApplication: true,
	ProxyImageAnnotation: true, ProxyCPUAnnotation: true, ProxyMemoryAnnotation: true, ProxyCPULimitAnnotation: true,
	ProxyMemoryLimitAnnotation: true, InterceptionModeAnnotation: true, RewriteProbesAnnotation: true,
}

var checkedPrefixes = []string{"sidecar.istio.io/", "traffic.sidecar.istio.io/", "proxy.istio.io/", "status.sidecar.istio.io/",
	"readiness.status.sidecar.istio.io/", "sidecar.legate.io/"}

// Patch decides whether pod is injected and returns the JSON patch that
// injects it, or why it is skipped. The pod's Namespace must be set (the
// webhook takes it from the request). An *InvalidError is a pod the
// user must fix.
func Patch(pod *corev1.Pod, cfg Config) ([]Op, *Skip, error) {
	if skip := Required(pod); skip != nil {
		return nil, skip, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	a := pod.Annotations
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, p := range checkedPrefixes {
			if strings.HasPrefix(k, p) && !handled[k] {
				return nil, nil, &InvalidError{"metadata.annotations[" + k + "]", "not supported by Legate's injector; remove it"}
			}
		}
	}
	if m, ok := a[InterceptionModeAnnotation]; ok && m != "REDIRECT" {
		return nil, nil, &InvalidError{"metadata.annotations[" + InterceptionModeAnnotation + "]", fmt.Sprintf("%q: only REDIRECT is supported", m)}
	}
	if v, ok := a[RewriteProbesAnnotation]; ok && v != "false" {
		return nil, nil, &InvalidError{"metadata.annotations[" + RewriteProbesAnnotation + "]", fmt.Sprintf("%q: Legate does not rewrite application probes; set \"false\" or remove it", v)}
	}
	hold := cfg.HoldApplicationUntilProxyStarts
	if v, ok := a[mesh.HoldApplication]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, nil, &InvalidError{"metadata.annotations[" + mesh.HoldApplication + "]", fmt.Sprintf("%q: use \"true\" or \"false\"", v)}
		}
		hold = b
	}
	initArgs, err := iptablesArgs(a)
	if err != nil {
		return nil, nil, err
	}
	image := cfg.Image
	if v := a[ProxyImageAnnotation]; v != "" {
		image = v
	}
	res, err := resources(a)
	if err != nil {
		return nil, nil, err
	}
	vols := volumes()
	for _, v := range pod.Spec.Volumes {
		for _, nv := range vols {
			if v.Name == nv.Name {
				return nil, nil, &InvalidError{"spec.volumes[" + v.Name + "]", "the injector adds a volume of this name; rename it"}
			}
		}
	}

	initC := corev1.Container{
		Name: mesh.InitContainer, Image: image, ImagePullPolicy: cfg.ImagePullPolicy, Args: initArgs,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("40Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")},
		},
		// iptables needs NET_ADMIN and NET_RAW, as root, and nothing else.
		SecurityContext: &corev1.SecurityContext{
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}},
			RunAsUser:    ptr(int64(0)), RunAsGroup: ptr(int64(0)), RunAsNonRoot: ptr(false),
			Privileged: ptr(false), AllowPrivilegeEscalation: ptr(false), ReadOnlyRootFilesystem: ptr(true),
		},
	}
	proxy := proxyContainer(cfg, image, res, hold)

	var ops []Op
	// legate-init runs first: application init containers then already
	// go through the redirect (as with Istio's istio-init).
	ops = append(ops, addToList("/spec/initContainers", len(pod.Spec.InitContainers), true, initC)...)
	ops = append(ops, addToList("/spec/containers", len(pod.Spec.Containers), hold, proxy)...)
	for i, v := range vols {
		ops = append(ops, addToList("/spec/volumes", len(pod.Spec.Volumes)+i, false, v)...)
	}

	st := Status{InitContainers: []string{mesh.InitContainer}, Containers: []string{mesh.ProxyContainer}, Revision: "default"}
	for _, v := range vols {
		st.Volumes = append(st.Volumes, v.Name)
	}
	stJSON, _ := json.Marshal(st)
	annotations := map[string]string{mesh.StatusAnnotation: string(stJSON)}
	if _, ok := a[DefaultContainerAnnotation]; !ok && len(pod.Spec.Containers) > 0 {
		annotations[DefaultContainerAnnotation] = pod.Spec.Containers[0].Name
	}
	ops = append(ops, addToMap("/metadata/annotations", a, annotations)...)
	labels := map[string]string{}
	if _, ok := pod.Labels[mesh.TLSModeLabel]; !ok {
		labels[mesh.TLSModeLabel] = mesh.TLSModeIstio
	}
	if _, ok := pod.Labels[mesh.CanonicalNameLabel]; !ok {
		labels[mesh.CanonicalNameLabel] = canonicalName(pod)
	}
	if _, ok := pod.Labels[mesh.CanonicalRevisionLabel]; !ok {
		labels[mesh.CanonicalRevisionLabel] = canonicalRevision(pod)
	}
	ops = append(ops, addToMap("/metadata/labels", pod.Labels, labels)...)
	return ops, nil, nil
}

// sidecarArgs are the legate-proxy container's arguments.
func sidecarArgs(cfg Config) []string {
	args := []string{"sidecar", "--xds-address", cfg.XDSAddress, "--ca-address", cfg.CAAddress}
	if cfg.TrustDomain != "" && cfg.TrustDomain != mesh.DefaultTrustDomain {
		args = append(args, "--trust-domain", cfg.TrustDomain)
	}
	return args
}

// proxyContainer is the legate-proxy container.
func proxyContainer(cfg Config, image string, res corev1.ResourceRequirements, hold bool) corev1.Container {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}}
	}
	c := corev1.Container{
		Name: mesh.ProxyContainer, Image: image, ImagePullPolicy: cfg.ImagePullPolicy,
		Args: sidecarArgs(cfg),
		Env: []corev1.EnvVar{
			field("POD_NAME", "metadata.name"), field("POD_NAMESPACE", "metadata.namespace"),
			field("INSTANCE_IP", "status.podIP"), field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
		},
		Ports: []corev1.ContainerPort{{Name: "http-envoy-prom", ContainerPort: mesh.StatsPort, Protocol: corev1.ProtocolTCP}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz/ready", Port: intstr.FromInt32(mesh.ReadinessPort)}},
			InitialDelaySeconds: 1, PeriodSeconds: 2, TimeoutSeconds: 3, FailureThreshold: 30,
		},
		Resources: res,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: ptr(int64(mesh.ProxyUID)), RunAsGroup: ptr(int64(mesh.ProxyGID)), RunAsNonRoot: ptr(true),
			Privileged: ptr(false), AllowPrivilegeEscalation: ptr(false), ReadOnlyRootFilesystem: ptr(true),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: WorkloadSocketVolume, MountPath: mesh.WorkloadSocketDir},
			{Name: StateVolume, MountPath: StateDir},
			{Name: TokenVolume, MountPath: mesh.TokenDir, ReadOnly: true},
			{Name: RootCertVolume, MountPath: mesh.RootCertDir, ReadOnly: true},
		},
	}
	if hold {
		// The kubelet starts the next container only when postStart
		// returns: it waits for the proxy's readiness (Istio runs
		// `pilot-agent wait` here).
		c.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
			Command: []string{"legate", "wait", "--url", fmt.Sprintf("http://127.0.0.1:%d/healthz/ready", mesh.ReadinessPort)},
		}}}
	}
	return c
}

// volumes are the pod volumes the proxy mounts.
func volumes() []corev1.Volume {
	return []corev1.Volume{
		{Name: WorkloadSocketVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: StateVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
		{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{
			ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: mesh.TokenAudience, ExpirationSeconds: ptr(int64(43200)), Path: mesh.TokenFile},
		}}}}},
		{Name: RootCertVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: mesh.RootCertConfigMap},
		}}},
	}
}

// iptablesArgs are legate-init's arguments, from the pod's traffic
// annotations (Istio's defaults: intercept every inbound port and every
// outbound address).
func iptablesArgs(a map[string]string) ([]string, error) {
	inbound := "*"
	if v, ok := a[mesh.IncludeInboundPorts]; ok {
		var err error
		if inbound, err = portList(mesh.IncludeInboundPorts, v, true); err != nil {
			return nil, err
		}
	}
	exclIn, err := portList(mesh.ExcludeInboundPorts, a[mesh.ExcludeInboundPorts], false)
	if err != nil {
		return nil, err
	}
	ex := []string{}
	for _, p := range excludedInboundPorts {
		ex = append(ex, strconv.Itoa(p))
	}
	for _, p := range strings.Split(exclIn, ",") {
		if p != "" && !contains(ex, p) {
			ex = append(ex, p)
		}
	}
	outCIDRs := "*"
	if v, ok := a[mesh.IncludeOutboundIPRanges]; ok {
		if outCIDRs, err = cidrList(mesh.IncludeOutboundIPRanges, v, true); err != nil {
			return nil, err
		}
	}
	exclCIDRs, err := cidrList(mesh.ExcludeOutboundIPRanges, a[mesh.ExcludeOutboundIPRanges], false)
	if err != nil {
		return nil, err
	}
	exclOut, err := portList(mesh.ExcludeOutboundPorts, a[mesh.ExcludeOutboundPorts], false)
	if err != nil {
		return nil, err
	}
	args := []string{"iptables",
		"--proxy-uid", strconv.Itoa(mesh.ProxyUID), "--proxy-gid", strconv.Itoa(mesh.ProxyGID),
		"--outbound-port", strconv.Itoa(mesh.OutboundPort), "--inbound-port", strconv.Itoa(mesh.InboundPort),
		"--inbound-ports", inbound, "--exclude-inbound-ports", strings.Join(ex, ","),
		"--outbound-cidrs", outCIDRs,
		// The sidecar's listeners are IPv4 (0.0.0.0): IPv6 traffic is
		// left alone rather than redirected to nothing.
		"--ipv6", "false",
	}
	if exclCIDRs != "" {
		args = append(args, "--exclude-outbound-cidrs", exclCIDRs)
	}
	if exclOut != "" {
		args = append(args, "--exclude-outbound-ports", exclOut)
	}
	return args, nil
}

// portList normalises a comma-separated port list ("*" where star is
// allowed; an empty include list intercepts nothing, as Istio).
func portList(key, v string, star bool) (string, error) {
	v = strings.TrimSpace(v)
	if v == "*" && star {
		return v, nil
	}
	var out []string
	for _, p := range strings.Split(v, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			want := "comma-separated ports 1-65535"
			if star {
				want += `, or "*"`
			}
			return "", &InvalidError{"metadata.annotations[" + key + "]", fmt.Sprintf("%q: want %s", p, want)}
		}
		out = append(out, strconv.Itoa(n))
	}
	return strings.Join(out, ","), nil
}

// cidrList normalises a comma-separated CIDR list.
func cidrList(key, v string, star bool) (string, error) {
	v = strings.TrimSpace(v)
	if v == "*" && star {
		return v, nil
	}
	var out []string
	for _, c := range strings.Split(v, ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			want := "comma-separated CIDRs such as 10.0.0.0/8"
			if star {
				want += `, or "*"`
			}
			return "", &InvalidError{"metadata.annotations[" + key + "]", fmt.Sprintf("%q: want %s", c, want)}
		}
		out = append(out, p.Masked().String())
	}
	return strings.Join(out, ","), nil
}

// resources are the proxy's requests and limits: Istio's defaults,
// overridden by its annotations.
func resources(a map[string]string) (corev1.ResourceRequirements, error) {
	r := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")},
	}
	for _, s := range []struct {
		key  string
		list corev1.ResourceList
		name corev1.ResourceName
	}{
		{ProxyCPUAnnotation, r.Requests, corev1.ResourceCPU}, {ProxyMemoryAnnotation, r.Requests, corev1.ResourceMemory},
		{ProxyCPULimitAnnotation, r.Limits, corev1.ResourceCPU}, {ProxyMemoryLimitAnnotation, r.Limits, corev1.ResourceMemory},
	} {
		v, ok := a[s.key]
		if !ok {
			continue
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return r, &InvalidError{"metadata.annotations[" + s.key + "]", fmt.Sprintf("%q: %v", v, err)}
		}
		s.list[s.name] = q
	}
	return r, nil
}

// canonicalName is the workload's name for telemetry, as Istio derives
// it: app.kubernetes.io/name, app, then the controlling workload's name.
func canonicalName(pod *corev1.Pod) string {
	for _, l := range []string{"app.kubernetes.io/name", "app"} {
		if v := pod.Labels[l]; v != "" {
			return v
		}
	}
	return WorkloadName(pod)
}

func canonicalRevision(pod *corev1.Pod) string {
	for _, l := range []string{"app.kubernetes.io/version", "version"} {
		if v := pod.Labels[l]; v != "" {
			return v
		}
	}
	return "latest"
}

// WorkloadName is the name of what runs pod: its Deployment (a
// ReplicaSet owner without its pod-template-hash), other owner, or the
// pod's own name.
func WorkloadName(pod *corev1.Pod) string {
	for _, o := range pod.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		if o.Kind == "ReplicaSet" {
			if h := pod.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(o.Name, "-"+h) {
				return strings.TrimSuffix(o.Name, "-"+h)
			}
		}
		return o.Name
	}
	if pod.Name != "" {
		return pod.Name
	}
	return strings.TrimSuffix(pod.GenerateName, "-")
}

// addToList adds v to the array at path of current length n: first or
// last, creating the array when empty.
func addToList(path string, n int, first bool, v any) []Op {
	switch {
	case n == 0:
		return []Op{{Op: "add", Path: path, Value: []any{v}}}
	case first:
		return []Op{{Op: "add", Path: path + "/0", Value: v}}
	default:
		return []Op{{Op: "add", Path: path + "/-", Value: v}}
	}
}

// addToMap sets keys in the object at path, creating it when absent.
func addToMap(path string, current, add map[string]string) []Op {
	if len(add) == 0 {
		return nil
	}
	if current == nil {
		return []Op{{Op: "add", Path: path, Value: add}}
	}
	keys := make([]string, 0, len(add))
	for k := range add {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ops []Op
	for _, k := range keys {
		ops = append(ops, Op{Op: "add", Path: path + "/" + escape(k), Value: add[k]})
	}
	return ops
}

// escape makes a JSON pointer token (RFC 6901).
func escape(s string) string { return strings.NewReplacer("~", "~0", "/", "~1").Replace(s) }

func unescape(s string) string { return strings.NewReplacer("~1", "/", "~0", "~").Replace(s) }

// Apply applies ops (adds only, as Patch makes) to a decoded JSON
// object: what the API server does with the webhook's answer, for
// `legate inject`.
func Apply(doc map[string]any, ops []Op) error {
	raw, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	var generic []struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}
	if err := json.Unmarshal(raw, &generic); err != nil {
		return err
	}
	for _, op := range generic {
		if op.Op != "add" {
			return fmt.Errorf("patch op %q at %s: only add is supported", op.Op, op.Path)
		}
		if err := add(doc, op.Path, op.Value); err != nil {
			return fmt.Errorf("patch %s: %w", op.Path, err)
		}
	}
	return nil
}

func add(doc map[string]any, path string, v any) error {
	if !strings.HasPrefix(path, "/") {
		return errors.New("path must start with /")
	}
	toks := strings.Split(path[1:], "/")
	var parent any = doc
	// set replaces the container holding the last token (arrays grow by
	// reallocation, so the grandparent must be updated).
	var set func(any)
	for i, t := range toks {
		t = unescape(t)
		last := i == len(toks)-1
		switch p := parent.(type) {
		case map[string]any:
			if last {
				p[t] = v
				return nil
			}
			next, ok := p[t]
			if !ok {
				return fmt.Errorf("no member %q", t)
			}
			m := p
			key := t
			set = func(x any) { m[key] = x }
			parent = next
		case []any:
			idx := len(p)
			if t != "-" {
				n, err := strconv.Atoi(t)
				if err != nil || n < 0 || n > len(p) {
					return fmt.Errorf("bad array index %q", t)
				}
				idx = n
			}
			if last {
				out := append(p[:idx:idx], append([]any{v}, p[idx:]...)...)
				set(out)
				return nil
			}
			if idx >= len(p) {
				return fmt.Errorf("array index %q out of range", t)
			}
			arr, n := p, idx
			set = func(x any) { arr[n] = x }
			parent = p[idx]
		default:
			return fmt.Errorf("%q is not in an object or array", t)
		}
	}
	return nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }
