package nodeagent

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// prober tracks one probe of one container run: the kubelet's thresholds
// and period, except that a probe that has never succeeded is retried at
// least every second (a test should not wait ten seconds for a backend
// that listens a millisecond after it starts).
type prober struct {
	p         *corev1.Probe
	due       time.Time
	successes int32
	failures  int32
	result    bool // the thresholded result
	ever      bool // has succeeded once
	message   string
}

func newProber(p *corev1.Probe, started time.Time) *prober {
	if p == nil {
		return nil
	}
	return &prober{p: p, due: started.Add(time.Duration(p.InitialDelaySeconds) * time.Second)}
}

func defaulted(v, def int32) int32 {
	if v <= 0 {
		return def
	}
	return v
}

// run probes when due and updates the result; it returns the next time due.
func (pr *prober) run(ctx context.Context, podIP string, c *corev1.Container, now time.Time) time.Time {
	if now.Before(pr.due) {
		return pr.due
	}
	ok, msg := probe(ctx, pr.p, podIP, c)
	pr.message = msg
	if ok {
		pr.successes++
		pr.failures = 0
		if pr.successes >= defaulted(pr.p.SuccessThreshold, 1) {
			pr.result, pr.ever = true, true
		}
	} else {
		pr.failures++
		pr.successes = 0
		if pr.failures >= defaulted(pr.p.FailureThreshold, 3) {
			pr.result = false
		}
	}
	period := time.Duration(defaulted(pr.p.PeriodSeconds, 10)) * time.Second
	if !pr.ever && period > time.Second {
		period = time.Second
	}
	pr.due = time.Now().Add(period)
	return pr.due
}

// probe runs one probe against the container at podIP from the node.
func probe(ctx context.Context, p *corev1.Probe, podIP string, c *corev1.Container) (bool, string) {
	timeout := time.Duration(defaulted(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.HTTPGet != nil:
		g := p.HTTPGet
		port, err := probePort(g.Port, c)
		if err != nil {
			return false, err.Error()
		}
		host := g.Host
		if host == "" {
			host = podIP
		}
		scheme := "http"
		if g.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		path := g.Path
		if path == "" || path[0] != '/' {
			path = "/" + path
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+path, nil)
		if err != nil {
			return false, err.Error()
		}
		req.Header.Set("User-Agent", "kube-probe/1.36")
		for _, h := range g.HTTPHeaders {
			if h.Name == "Host" {
				req.Host = h.Value
			} else {
				req.Header.Add(h.Name, h.Value)
			}
		}
		client := &http.Client{
			Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}, //nolint:gosec // as the kubelet: probes do not verify
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, fmt.Sprintf("HTTP probe failed: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return false, fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return true, ""
	case p.TCPSocket != nil:
		port, err := probePort(p.TCPSocket.Port, c)
		if err != nil {
			return false, err.Error()
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = podIP
		}
		return dialOK(ctx, net.JoinHostPort(host, strconv.Itoa(port)))
	case p.GRPC != nil:
		conn, err := grpc.NewClient(net.JoinHostPort(podIP, strconv.Itoa(int(p.GRPC.Port))), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return false, err.Error()
		}
		defer conn.Close()
		svc := ""
		if p.GRPC.Service != nil {
			svc = *p.GRPC.Service
		}
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			return false, fmt.Sprintf("gRPC probe failed: %v", err)
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return false, fmt.Sprintf("gRPC probe: service %q is %v", svc, resp.Status)
		}
		return true, ""
	case p.Exec != nil:
		return false, "exec probes are not supported by the kubeenv node agent"
	}
	return false, "probe has no handler"
}

func dialOK(ctx context.Context, addr string) (bool, string) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false, fmt.Sprintf("TCP probe failed: %v", err)
	}
	conn.Close()
	return true, ""
}

// probePort resolves a probe's port, a number or a container port name.
func probePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("probe port %q is not a port of container %s", p.StrVal, c.Name)
}

// portsListen reports whether every TCP port container c declares accepts
// connections at podIP: without a readiness probe, a container is ready
// once they do (the kubelet would call it ready when it starts).
func portsListen(ctx context.Context, podIP string, c *corev1.Container) (bool, string) {
	for _, cp := range c.Ports {
		if cp.Protocol != "" && cp.Protocol != corev1.ProtocolTCP {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		ok, msg := dialOK(dctx, net.JoinHostPort(podIP, strconv.Itoa(int(cp.ContainerPort))))
		cancel()
		if !ok {
			return false, fmt.Sprintf("port %d does not accept connections yet: %s", cp.ContainerPort, msg)
		}
	}
	return true, ""
}
