// Package nodeagent is the test environment's kubelet: a small node agent
// that registers one Node, binds the cluster's pending Pods to it (it is
// the scheduler too), runs each Pod's containers as local processes and
// writes Pod status.
//
// Each Pod gets its own network namespace (held by a sleeping process)
// joined to a bridge in the agent's network namespace by a veth pair, with
// an address of the node's pod CIDR: the node's (the bridge's) address is
// the CIDR's first, so everything in the agent's namespace reaches
// podIP:containerPort directly. Containers are executables that stand for
// their images (Config.Images); each runs in the pod's network namespace,
// in a private mount namespace with the pod's volumes (emptyDir, secret,
// configMap, downwardAPI, projected with service account tokens) bind
// mounted at their mount paths, and with the Kubernetes environment
// (env, envFrom, the downward API, $(VAR) expansion).
//
// A container is ready when its readiness probe (httpGet, tcpSocket,
// grpc) succeeds or, without one, once every TCP port it declares accepts
// connections. Liveness and startup probes restart it; a container that
// exits is restarted as the pod's restartPolicy says, with a short
// back-off. A Pod being deleted has its processes stopped (SIGTERM, then
// SIGKILL after the grace period), its network and files removed, and is
// then deleted for good (grace period 0), as the kubelet does.
//
// The agent must run in a private network namespace (it adds links to
// it) as root; containers start as re-executions of the running binary,
// which this package's init function turns into the container's process,
// so the binary must import this package (importing test/kubeenv does).
package nodeagent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// Config is what an Agent needs.
type Config struct {
	// Client talks to the API server with rights over Nodes, Pods
	// (binding, status, deletion), Secrets, ConfigMaps and
	// ServiceAccount tokens.
	Client kubernetes.Interface
	// NodeName names the Node the agent registers.
	NodeName string
	// PodCIDR is the node's address range: the node (its bridge) takes
	// the first address, pods the others. An IPv4 prefix from /16 to /29.
	PodCIDR netip.Prefix
	// Images maps container images to executables: by exact reference
	// first, then by repository (the reference without tag or digest).
	Images map[string]Image
	// StateDir holds the pods' volumes and the containers' logs.
	StateDir string
	// Logger receives the agent's events; nil discards them.
	Logger *slog.Logger
}

// Agent is a running node agent.
type Agent struct {
	cfg         Config
	client      kubernetes.Interface
	log         *slog.Logger
	pool        *ipPool
	self        string
	allocatable corev1.ResourceList
	labels      map[string]string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu            sync.Mutex
	workers       map[types.UID]*worker
	binding       map[types.UID]bool
	unschedulable map[types.UID]bool
}

// New checks cfg and returns an agent that is not started yet.
func New(cfg Config) (*Agent, error) {
	if cfg.Client == nil || cfg.NodeName == "" || cfg.StateDir == "" {
		return nil, fmt.Errorf("nodeagent: Config needs Client, NodeName and StateDir")
	}
	pool, err := newIPPool(cfg.PodCIDR)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("nodeagent: find the running binary (containers start as its re-executions): %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, img := range cfg.Images {
		if !filepath.IsAbs(img.Path) {
			return nil, fmt.Errorf("nodeagent: image executable %q is not an absolute path", img.Path)
		}
	}
	return &Agent{
		cfg: cfg, client: cfg.Client, log: log, pool: pool, self: self,
		allocatable: corev1.ResourceList{
			corev1.ResourceCPU:              *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
			corev1.ResourceMemory:           resource.MustParse("8Gi"),
			corev1.ResourceEphemeralStorage: resource.MustParse("20Gi"),
			corev1.ResourcePods:             resource.MustParse("250"),
		},
		labels: map[string]string{
			corev1.LabelHostname:   cfg.NodeName,
			corev1.LabelOSStable:   "linux",
			corev1.LabelArchStable: runtime.GOARCH,
		},
		workers:       map[types.UID]*worker{},
		binding:       map[types.UID]bool{},
		unschedulable: map[types.UID]bool{},
	}, nil
}

// NodeIP is the node's address: the first of the pod CIDR, on the bridge.
func (a *Agent) NodeIP() netip.Addr { return a.pool.node }

// CheckHost reports what keeps the agent from running here: it needs
// root, a private network namespace and ip, nsenter and sleep.
func CheckHost() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("nodeagent: needs root (network links and mount namespaces)")
	}
	if err := checkPrivateNetns(); err != nil {
		return fmt.Errorf("nodeagent: %w", err)
	}
	for _, tool := range []string{"ip", "nsenter", "sleep"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("nodeagent: %s is needed (iproute2, util-linux, coreutils): %w", tool, err)
		}
	}
	return nil
}

// Start makes the node's bridge, registers the Node (Ready) and starts
// watching Pods. It returns once the watch has synced.
func (a *Agent) Start(ctx context.Context) error {
	if err := CheckHost(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(a.cfg.StateDir, "logs"), 0o755); err != nil {
		return err
	}
	if err := setupBridge(netip.PrefixFrom(a.pool.node, a.pool.prefix.Bits())); err != nil {
		return fmt.Errorf("nodeagent: %w", err)
	}
	if err := a.registerNode(ctx); err != nil {
		return fmt.Errorf("nodeagent: register Node %s: %w", a.cfg.NodeName, err)
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	factory := informers.NewSharedInformerFactory(a.client, 0)
	inf := factory.Core().V1().Pods().Informer()
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.onPod(obj) },
		UpdateFunc: func(_, obj any) { a.onPod(obj) },
		DeleteFunc: a.onPodDelete,
	})
	if err := a.serveKubeletAPI(); err != nil {
		a.cancel()
		return fmt.Errorf("nodeagent: %w", err)
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.heartbeat()
	}()
	factory.Start(a.ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		a.cancel()
		return fmt.Errorf("nodeagent: the Pod watch did not sync")
	}
	a.log.Info("node agent started", "node", a.cfg.NodeName, "nodeIP", a.pool.node, "podCIDR", a.pool.prefix)
	return nil
}

// Stop kills every container and sandbox the agent started and removes
// the node's bridge. It does not touch the API (which may be gone).
func (a *Agent) Stop() {
	if a.cancel == nil {
		return
	}
	a.cancel()
	a.wg.Wait()
	exec.Command("ip", "link", "del", bridgeName).Run()
}

func (a *Agent) registerNode(ctx context.Context) error {
	name := a.cfg.NodeName
	prefix := a.pool.prefix.String()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: a.labels},
		Spec:       corev1.NodeSpec{PodCIDR: prefix, PodCIDRs: []string{prefix}},
	}
	if _, err := a.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := a.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status = corev1.NodeStatus{
			Capacity:    a.allocatable,
			Allocatable: a.allocatable,
			Phase:       corev1.NodeRunning,
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
				cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "the kubeenv node agent is posting ready status"),
			},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: a.pool.node.String()},
				{Type: corev1.NodeHostName, Address: name},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
			NodeInfo: corev1.NodeSystemInfo{
				KubeletVersion:          "v1.36.3",
				OperatingSystem:         "linux",
				Architecture:            runtime.GOARCH,
				ContainerRuntimeVersion: "kubeenv://1",
				OSImage:                 "kubeenv",
			},
		}
		_, err = a.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return err
	}
	// The API server taints a new Node not-ready; the node lifecycle
	// controller (not run here) would lift it once the Node is Ready.
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := a.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		var keep []corev1.Taint
		for _, t := range n.Spec.Taints {
			if t.Key != corev1.TaintNodeNotReady && t.Key != corev1.TaintNodeUnreachable {
				keep = append(keep, t)
			}
		}
		if len(keep) == len(n.Spec.Taints) {
			return nil
		}
		n.Spec.Taints = keep
		_, err = a.client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

// heartbeat renews the Node's Lease (kube-node-lease) every 10 s, as
// the kubelet does, so that the node lifecycle controller, if run, sees
// the node alive.
func (a *Agent) heartbeat() {
	leases := a.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	name := a.cfg.NodeName
	dur := int32(40)
	for {
		now := metav1.NewMicroTime(time.Now())
		l, err := leases.Get(a.ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			l = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: &dur, RenewTime: &now},
			}
			if n, err := a.client.CoreV1().Nodes().Get(a.ctx, name, metav1.GetOptions{}); err == nil {
				l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: name, UID: n.UID}}
			}
			_, err = leases.Create(a.ctx, l, metav1.CreateOptions{})
		case err == nil:
			l.Spec.RenewTime = &now
			_, err = leases.Update(a.ctx, l, metav1.UpdateOptions{})
		}
		if err != nil && a.ctx.Err() == nil {
			a.log.Info("renew the node lease", "err", err)
		}
		select {
		case <-a.ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}

func (a *Agent) onPod(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	switch pod.Spec.NodeName {
	case "":
		a.maybeBind(pod)
	case a.cfg.NodeName:
		a.dispatch(pod)
	}
}

func (a *Agent) onPodDelete(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	w := a.workers[pod.UID]
	delete(a.binding, pod.UID)
	delete(a.unschedulable, pod.UID)
	a.mu.Unlock()
	if w != nil {
		w.notify(nil)
	}
}

// dispatch hands a pod bound to this node to its worker, starting one.
func (a *Agent) dispatch(pod *corev1.Pod) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctx.Err() != nil {
		return
	}
	if w := a.workers[pod.UID]; w != nil {
		w.notify(pod)
		return
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		if pod.DeletionTimestamp == nil {
			return // finished; its worker is gone
		}
	}
	w := newWorker(a, pod)
	a.workers[pod.UID] = w
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		w.run(a.ctx)
	}()
}

// forget drops a finished worker.
func (a *Agent) forget(uid types.UID) {
	a.mu.Lock()
	delete(a.workers, uid)
	a.mu.Unlock()
}

// maybeBind binds a pending pod to the node, as the scheduler would: pods
// of the default scheduler without scheduling gates whose nodeSelector
// the node matches (node affinity and taints are not considered).
func (a *Agent) maybeBind(pod *corev1.Pod) {
	if pod.DeletionTimestamp != nil || len(pod.Spec.SchedulingGates) > 0 ||
		pod.Spec.SchedulerName != "" && pod.Spec.SchedulerName != corev1.DefaultSchedulerName {
		return
	}
	a.mu.Lock()
	if a.binding[pod.UID] || a.unschedulable[pod.UID] || a.ctx.Err() != nil {
		a.mu.Unlock()
		return
	}
	a.binding[pod.UID] = true
	a.mu.Unlock()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer func() {
			a.mu.Lock()
			delete(a.binding, pod.UID)
			a.mu.Unlock()
		}()
		ctx := a.ctx
		for k, v := range pod.Spec.NodeSelector {
			if a.labels[k] != v {
				a.markUnschedulable(ctx, pod, fmt.Sprintf("0/1 nodes are available: 1 node(s) didn't match Pod's node selector (%s=%s).", k, v))
				return
			}
		}
		b := &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: a.cfg.NodeName},
		}
		for attempt := 0; attempt < 5; attempt++ {
			err := a.client.CoreV1().Pods(pod.Namespace).Bind(ctx, b, metav1.CreateOptions{})
			if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) || ctx.Err() != nil {
				if err == nil {
					a.log.Info("pod bound", "pod", pod.Namespace+"/"+pod.Name, "node", a.cfg.NodeName)
				}
				return
			}
			a.log.Info("bind pod", "pod", pod.Namespace+"/"+pod.Name, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
}

func (a *Agent) markUnschedulable(ctx context.Context, pod *corev1.Pod, msg string) {
	a.mu.Lock()
	a.unschedulable[pod.UID] = true
	a.mu.Unlock()
	p := pod.DeepCopy()
	cond := corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: msg, LastTransitionTime: metav1.Now()}
	var conds []corev1.PodCondition
	for _, c := range p.Status.Conditions {
		if c.Type != corev1.PodScheduled {
			conds = append(conds, c)
		}
	}
	p.Status.Conditions = append(conds, cond)
	if _, err := a.client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		a.log.Info("mark pod unschedulable", "pod", p.Namespace+"/"+p.Name, "err", err)
	}
}
