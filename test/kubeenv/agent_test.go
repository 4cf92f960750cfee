package kubeenv_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/legateproxy/legate/test/kubeenv"
)

const shImage = "example.test/sh:1"

func ptr[T any](v T) *T { return &v }

func createPod(t *testing.T, env *kubeenv.Env, pod *corev1.Pod) {
	t.Helper()
	if _, err := env.Client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s: %v", pod.Name, err)
	}
}

// waitPod waits until check accepts the pod and returns it.
func waitPod(t *testing.T, env *kubeenv.Env, ns, name string, d time.Duration, what string, check func(*corev1.Pod) error) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, d, "pod "+name+": "+what, func() error {
		p, err := env.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod = p
		if err := check(p); err != nil {
			return fmt.Errorf("%w (status: phase %s, containers %s)", err, p.Status.Phase, describe(p.Status.ContainerStatuses))
		}
		return nil
	})
	return pod
}

func describe(cs []corev1.ContainerStatus) string {
	var parts []string
	for _, c := range cs {
		st := "?"
		switch {
		case c.State.Running != nil:
			st = "running"
		case c.State.Waiting != nil:
			st = "waiting " + c.State.Waiting.Reason + ": " + c.State.Waiting.Message
		case c.State.Terminated != nil:
			st = fmt.Sprintf("terminated %d %s", c.State.Terminated.ExitCode, c.State.Terminated.Reason)
		}
		parts = append(parts, fmt.Sprintf("%s[%s ready=%v restarts=%d]", c.Name, st, c.Ready, c.RestartCount))
	}
	return strings.Join(parts, " ")
}

func shPod(ns, name string, policy corev1.RestartPolicy, script string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			RestartPolicy: policy,
			Containers:    []corev1.Container{{Name: "sh", Image: shImage, Command: []string{"sh", "-c", script}}},
		},
	}
}

func condition(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// testRestarts: exits follow the restart policy.
func testRestarts(t *testing.T, env *kubeenv.Env) {
	const ns = "restarts"
	newNamespace(t, env.Client, ns)
	createPod(t, env, shPod(ns, "crash", corev1.RestartPolicyAlways, "echo run; exit 3"))
	createPod(t, env, shPod(ns, "fail", corev1.RestartPolicyNever, "exit 3"))
	createPod(t, env, shPod(ns, "done", corev1.RestartPolicyNever, "exit 0"))
	once := shPod(ns, "once", corev1.RestartPolicyOnFailure, "if [ -e /data/ran ]; then exit 0; fi; touch /data/ran; exit 1")
	once.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	once.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	createPod(t, env, once)

	waitPod(t, env, ns, "crash", 30*time.Second, "restarted twice", func(p *corev1.Pod) error {
		cs := p.Status.ContainerStatuses
		if len(cs) != 1 || cs[0].RestartCount < 2 {
			return fmt.Errorf("not restarted twice")
		}
		if lt := cs[0].LastTerminationState.Terminated; lt == nil || lt.ExitCode != 3 || lt.Reason != "Error" {
			return fmt.Errorf("last state %+v", cs[0].LastTerminationState)
		}
		if p.Status.Phase != corev1.PodRunning || podReady(p) {
			return fmt.Errorf("want phase Running and not ready while crash-looping")
		}
		return nil
	})
	if log := env.ContainerLog(ns, "crash", "sh"); strings.Count(log, "run\n") < 3 {
		t.Fatalf("the crashing container's log has %q, want a line per run", log)
	}
	// pods/log through the API server (the agent's kubelet API): the
	// previous run's output, with its timestamp.
	b, err := env.Client.CoreV1().Pods(ns).GetLogs("crash", &corev1.PodLogOptions{Previous: true, Timestamps: true}).DoRaw(ctx)
	if err != nil {
		t.Fatalf("pods/log: %v", err)
	}
	ts, line, _ := strings.Cut(string(b), " ")
	if at, err := time.Parse(time.RFC3339Nano, ts); err != nil || time.Since(at) > time.Minute || line != "run\n" {
		t.Fatalf("pods/log of the previous run: %q", b)
	}
	waitPod(t, env, ns, "fail", 30*time.Second, "Failed", func(p *corev1.Pod) error {
		cs := p.Status.ContainerStatuses
		if p.Status.Phase != corev1.PodFailed || len(cs) != 1 || cs[0].State.Terminated == nil || cs[0].State.Terminated.ExitCode != 3 || cs[0].RestartCount != 0 {
			return fmt.Errorf("not failed once with 3")
		}
		return nil
	})
	waitPod(t, env, ns, "done", 30*time.Second, "Succeeded", func(p *corev1.Pod) error {
		cs := p.Status.ContainerStatuses
		if p.Status.Phase != corev1.PodSucceeded || len(cs) != 1 || cs[0].State.Terminated == nil || cs[0].State.Terminated.Reason != "Completed" {
			return fmt.Errorf("not succeeded")
		}
		return nil
	})
	waitPod(t, env, ns, "once", 30*time.Second, "Succeeded after one restart (its emptyDir kept)", func(p *corev1.Pod) error {
		cs := p.Status.ContainerStatuses
		if p.Status.Phase != corev1.PodSucceeded || len(cs) != 1 || cs[0].RestartCount != 1 {
			return fmt.Errorf("not succeeded after one restart")
		}
		return nil
	})
}

func echoPod(ns, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "echo", Image: echoImage, Env: echoEnv(),
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 3000}},
		}}},
	}
}

// testProbes: readiness comes from probes, or from the declared ports
// listening; liveness failures restart.
func testProbes(t *testing.T, env *kubeenv.Env) {
	const ns = "probes"
	newNamespace(t, env.Client, ns)
	httpProbe := func(path string, port intstr.IntOrString) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: port}}, PeriodSeconds: 1}
	}
	unready := echoPod(ns, "unready")
	unready.Spec.Containers[0].ReadinessProbe = httpProbe("/status/503", intstr.FromInt32(3000))
	readyHTTP := echoPod(ns, "ready-http")
	readyHTTP.Spec.Containers[0].ReadinessProbe = httpProbe("/health", intstr.FromString("http"))
	readyTCP := echoPod(ns, "ready-tcp")
	readyTCP.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(3000)}}}
	// Declares port 3000 but listens on 3500: never ready without a probe.
	wrongPort := echoPod(ns, "wrong-port")
	wrongPort.Spec.Containers[0].Env = append(wrongPort.Spec.Containers[0].Env, corev1.EnvVar{Name: "HTTP_PORT", Value: "3500"})
	live := echoPod(ns, "liveness")
	live.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/status/500", Port: intstr.FromInt32(3000)}}, PeriodSeconds: 1, FailureThreshold: 2}
	noPorts := shPod(ns, "no-ports", corev1.RestartPolicyAlways, "exec sleep 1000")
	for _, p := range []*corev1.Pod{unready, readyHTTP, readyTCP, wrongPort, live, noPorts} {
		createPod(t, env, p)
	}
	for _, name := range []string{"ready-http", "ready-tcp", "no-ports"} {
		waitPod(t, env, ns, name, 30*time.Second, "Ready", func(p *corev1.Pod) error {
			if !podReady(p) || condition(p, corev1.ContainersReady).Status != corev1.ConditionTrue {
				return fmt.Errorf("not ready")
			}
			return nil
		})
	}
	waitPod(t, env, ns, "liveness", 30*time.Second, "restarted by its liveness probe", func(p *corev1.Pod) error {
		if cs := p.Status.ContainerStatuses; len(cs) != 1 || cs[0].RestartCount < 1 {
			return fmt.Errorf("not restarted")
		}
		return nil
	})
	// The others stay unready while their processes run and answer.
	for _, name := range []string{"unready", "wrong-port"} {
		p := waitPod(t, env, ns, name, 30*time.Second, "running", func(p *corev1.Pod) error {
			if p.Status.Phase != corev1.PodRunning {
				return fmt.Errorf("not running")
			}
			return nil
		})
		port := "3000"
		if name == "wrong-port" {
			port = "3500"
		}
		eventually(t, 10*time.Second, name+" answers", func() error {
			_, err := getEcho(net.JoinHostPort(p.Status.PodIP, port), "/")
			return err
		})
	}
	time.Sleep(2 * time.Second)
	for _, name := range []string{"unready", "wrong-port"} {
		p, err := env.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if podReady(p) || p.Status.ContainerStatuses[0].Ready {
			t.Fatalf("pod %s is ready: %s", name, describe(p.Status.ContainerStatuses))
		}
		if c := condition(p, corev1.PodReady); c.Reason != "ContainersNotReady" {
			t.Fatalf("pod %s Ready condition %+v", name, c)
		}
	}
}

// testRefusals: what the agent cannot run is said in the status.
func testRefusals(t *testing.T, env *kubeenv.Env) {
	const ns = "refusals"
	newNamespace(t, env.Client, ns)
	unknown := echoPod(ns, "unknown-image")
	unknown.Spec.Containers[0].Image = "example.test/nothing:1"
	badCmd := echoPod(ns, "bad-command")
	badCmd.Spec.Containers[0].Command = []string{"/usr/bin/python3"}
	unsched := echoPod(ns, "unschedulable")
	unsched.Spec.NodeSelector = map[string]string{"disk": "ssd"}
	for _, p := range []*corev1.Pod{unknown, badCmd, unsched} {
		createPod(t, env, p)
	}
	for name, reason := range map[string]string{"unknown-image": "ImageNotMapped", "bad-command": "CommandNotInImage"} {
		waitPod(t, env, ns, name, 30*time.Second, "waiting "+reason, func(p *corev1.Pod) error {
			cs := p.Status.ContainerStatuses
			if len(cs) != 1 || cs[0].State.Waiting == nil || cs[0].State.Waiting.Reason != reason || !strings.Contains(cs[0].State.Waiting.Message, "kubeenv") {
				return fmt.Errorf("not waiting with %s", reason)
			}
			if p.Status.Phase != corev1.PodPending || podReady(p) {
				return fmt.Errorf("want Pending, not ready")
			}
			return nil
		})
	}
	waitPod(t, env, ns, "unschedulable", 30*time.Second, "Unschedulable", func(p *corev1.Pod) error {
		c := condition(p, corev1.PodScheduled)
		if c == nil || c.Status != corev1.ConditionFalse || c.Reason != corev1.PodReasonUnschedulable || p.Spec.NodeName != "" {
			return fmt.Errorf("PodScheduled %+v node %q", c, p.Spec.NodeName)
		}
		return nil
	})
}

// selfSigned returns a PEM certificate and key for name.
func selfSigned(t *testing.T, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

// testVolumesAndEnv: a pod whose Secret and ConfigMap come after it waits
// for them (as the conformance suite's tls-backend does), then echo-basic
// serves TLS with the Secret's certificate from a mount path that does
// not exist on the host, and a shell sees the volumes and the environment.
func testVolumesAndEnv(t *testing.T, env *kubeenv.Env) {
	const ns = "volumes"
	newNamespace(t, env.Client, ns)
	secretMount := "/etc/secret-volume"
	confMount := "/etc/kubeenv-test/conf"
	for _, p := range []string{secretMount, "/etc/kubeenv-test"} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s exists on this host: the test needs a path that does not", p)
		}
	}
	script := strings.Join([]string{
		"cat " + confMount + "/greeting; echo",
		`echo "ip=$POD_IP node=$NODE sa=$SA msg=$MSG extra=$EXTRA cpu=$CPU pfx_greeting=$PFX_greeting"`,
		"cat /etc/podinfo/labels; echo",
		"echo token=$(wc -c < /var/run/secrets/kubernetes.io/serviceaccount/token)",
		"echo hostname=$(hostname)",
		"echo end",
		"exec sleep 1000",
	}, "; ")
	limit := resource.MustParse("500m")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "tls-backend", Namespace: ns, Labels: map[string]string{"app": "tls-backend"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{
				{
					Name: "echo", Image: echoImage,
					Env: append(echoEnv(),
						corev1.EnvVar{Name: "TLS_SERVER_CERT", Value: secretMount + "/crt"},
						corev1.EnvVar{Name: "TLS_SERVER_PRIVKEY", Value: secretMount + "/key"}),
					Ports:        []corev1.ContainerPort{{ContainerPort: 3000}, {ContainerPort: 8443}},
					VolumeMounts: []corev1.VolumeMount{{Name: "secret-volume", MountPath: secretMount}},
				},
				{
					Name: "sh", Image: shImage, Command: []string{"sh", "-c", script},
					Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: limit}},
					Env: []corev1.EnvVar{
						{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
						{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
						{Name: "SA", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.serviceAccountName"}}},
						{Name: "MSG", Value: "hello-$(NODE)-$$(NODE)"},
						{Name: "EXTRA", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "tls"}, Key: "extra"}}},
						{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu", Divisor: resource.MustParse("1m")}}},
					},
					EnvFrom: []corev1.EnvFromSource{{Prefix: "PFX_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}}},
					VolumeMounts: []corev1.VolumeMount{
						{Name: "conf", MountPath: confMount},
						{Name: "podinfo", MountPath: "/etc/podinfo"},
					},
				},
			},
			Volumes: []corev1.Volume{
				{Name: "secret-volume", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
					SecretName: "tls", Items: []corev1.KeyToPath{{Key: "tls.crt", Path: "crt"}, {Key: "tls.key", Path: "key"}},
				}}},
				{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}}},
				{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
				}}}},
			},
		},
	}
	createPod(t, env, pod)
	waitPod(t, env, ns, pod.Name, 30*time.Second, "waiting for its Secret", func(p *corev1.Pod) error {
		cs := p.Status.ContainerStatuses
		if len(cs) != 2 || cs[0].State.Waiting == nil || cs[0].State.Waiting.Reason != "ContainerCreating" || !strings.Contains(cs[0].State.Waiting.Message, `secret volumes/tls: secrets "tls" not found`) {
			return fmt.Errorf("not waiting for the Secret")
		}
		if p.Status.Phase != corev1.PodPending || p.Status.PodIP == "" {
			return fmt.Errorf("want Pending with an address")
		}
		return nil
	})
	certPEM, keyPEM := selfSigned(t, "abc.example.com")
	if _, err := env.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "tls"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "extra": []byte("from-secret")},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "conf"},
		Data:       map[string]string{"greeting": "hi-from-configmap"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, env, ns, pod.Name, 30*time.Second, "Ready", func(p *corev1.Pod) error {
		if !podReady(p) {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	// echo-basic serves TLS with the Secret's certificate.
	conn, err := tls.Dial("tcp", net.JoinHostPort(p.Status.PodIP, "8443"), &tls.Config{InsecureSkipVerify: true, ServerName: "abc.example.com"}) //nolint:gosec // the certificate is compared below
	if err != nil {
		t.Fatalf("TLS to the pod: %v\n%s", err, env.ContainerLog(ns, pod.Name, "echo"))
	}
	peer := conn.ConnectionState().PeerCertificates
	conn.Close()
	block, _ := pem.Decode(certPEM)
	if len(peer) == 0 || string(peer[0].Raw) != string(block.Bytes) {
		t.Fatalf("the pod serves another certificate than its Secret's")
	}
	var log string
	eventually(t, 10*time.Second, "the shell container's output", func() error {
		log = env.ContainerLog(ns, pod.Name, "sh")
		if !strings.Contains(log, "end\n") {
			return fmt.Errorf("log so far: %q", log)
		}
		return nil
	})
	since := metav1.NewTime(time.Now().Add(time.Hour))
	if b, err := env.Client.CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{Container: "sh", SinceTime: &since}).DoRaw(ctx); err != nil || len(b) != 0 {
		t.Fatalf("pods/log since a time to come: %q %v", b, err)
	}
	if b, err := env.Client.CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{Container: "sh", TailLines: ptr(int64(1))}).DoRaw(ctx); err != nil || string(b) != "end\n" {
		t.Fatalf("pods/log tail 1: %q %v", b, err)
	}
	for _, want := range []string{
		"hi-from-configmap\n",
		fmt.Sprintf("ip=%s node=%s sa=default msg=hello-%s-$(NODE) extra=from-secret cpu=500 pfx_greeting=hi-from-configmap\n", p.Status.PodIP, env.NodeName, env.NodeName),
		`app="tls-backend"`,
		"hostname=tls-backend\n",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the shell's output lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "token=0") || !strings.Contains(log, "token=") {
		t.Errorf("no service account token in the pod:\n%s", log)
	}
	for _, p := range []string{secretMount, "/etc/kubeenv-test"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s appeared on the host: mounts must stay in the container's mount namespace", p)
		}
	}
	// Deleting the pod stops it (SIGTERM) and finalizes it at once.
	began := time.Now()
	if err := env.Client.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 40*time.Second, "pod deleted", func() error {
		_, err := env.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
	if d := time.Since(began); d > 5*time.Second {
		// echo-basic exits on SIGTERM; sh runs `sleep` (exec'd), which does too.
		t.Errorf("deleting the pod took %v: its processes should have stopped on SIGTERM", d)
	}
	if _, err := getEcho(net.JoinHostPort(p.Status.PodIP, "3000"), "/"); err == nil {
		t.Fatalf("the deleted pod still answers")
	}
}

// testInitAndSharedNetwork: init containers run to completion first; the
// containers of a pod share its address.
func testInitAndSharedNetwork(t *testing.T, env *kubeenv.Env) {
	const ns = "init"
	newNamespace(t, env.Client, ns)
	data := []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "two", Namespace: ns},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Image: shImage, Command: []string{"sh", "-c", "sleep 1; echo from-init > /data/init"}, VolumeMounts: data}},
			Containers: []corev1.Container{
				{Name: "a", Image: echoImage, Env: append(echoEnv(), corev1.EnvVar{Name: "HTTP_PORT", Value: "3000"}, corev1.EnvVar{Name: "H2C_PORT", Value: "3001"}), Ports: []corev1.ContainerPort{{ContainerPort: 3000}}},
				{Name: "b", Image: echoImage, Env: append(echoEnv(), corev1.EnvVar{Name: "HTTP_PORT", Value: "3002"}, corev1.EnvVar{Name: "H2C_PORT", Value: "3003"}), Ports: []corev1.ContainerPort{{ContainerPort: 3002}}},
				{Name: "c", Image: shImage, Command: []string{"sh", "-c", "cat /data/init; exec sleep 1000"}, VolumeMounts: data},
			},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
	createPod(t, env, pod)
	waitPod(t, env, ns, "two", 10*time.Second, "initializing", func(p *corev1.Pod) error {
		cs := p.Status.ContainerStatuses
		if c := condition(p, corev1.PodInitialized); c == nil || c.Status != corev1.ConditionFalse {
			return fmt.Errorf("initialized already: %+v", c)
		}
		if len(cs) != 3 || cs[0].State.Waiting == nil || cs[0].State.Waiting.Reason != "PodInitializing" {
			return fmt.Errorf("containers not waiting for the init container")
		}
		return nil
	})
	p := waitPod(t, env, ns, "two", 30*time.Second, "Ready", func(p *corev1.Pod) error {
		if !podReady(p) {
			return fmt.Errorf("not ready")
		}
		ic := p.Status.InitContainerStatuses
		if len(ic) != 1 || ic[0].State.Terminated == nil || ic[0].State.Terminated.ExitCode != 0 {
			return fmt.Errorf("init container %+v", ic)
		}
		return nil
	})
	for _, port := range []string{"3000", "3002"} {
		if r, err := getEcho(net.JoinHostPort(p.Status.PodIP, port), "/"); err != nil || r.Pod != "two" {
			t.Fatalf("container on port %s at the pod's address: %+v %v", port, r, err)
		}
	}
	eventually(t, 10*time.Second, "the init container's file", func() error {
		if log := env.ContainerLog(ns, "two", "c"); log != "from-init\n" {
			return fmt.Errorf("container c wrote %q", log)
		}
		return nil
	})
}
