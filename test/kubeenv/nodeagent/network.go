package nodeagent

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
)

// bridgeName is the node's bridge in the agent's network namespace; the
// pods' veth links are its ports and the node's address is on it.
const bridgeName = "kubeenv0"

// checkPrivateNetns refuses to run in the network namespace of PID 1: the
// agent adds a bridge and links to the namespace it runs in.
func checkPrivateNetns() error {
	self, err1 := os.Readlink("/proc/self/ns/net")
	init, err2 := os.Readlink("/proc/1/ns/net")
	if err1 != nil {
		return fmt.Errorf("read this process's network namespace: %w", err1)
	}
	if err2 == nil && self == init {
		return fmt.Errorf("the kubeenv node agent adds a bridge and links to its network namespace, and this is the network namespace of PID 1: run the test in a private one (if !testutil.InNetns(t) { return })")
	}
	return nil
}

// ipCmd runs ip(8) (or another command) and returns its error with its output.
func ipCmd(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setupBridge makes the node's bridge with the node's address.
func setupBridge(node netip.Prefix) error {
	exec.Command("ip", "link", "del", bridgeName).Run() // a leftover of this namespace
	for _, args := range [][]string{
		{"link", "add", bridgeName, "type", "bridge"},
		{"addr", "add", node.String(), "dev", bridgeName},
		{"link", "set", bridgeName, "up"},
		{"link", "set", "lo", "up"},
	} {
		if err := ipCmd("ip", args...); err != nil {
			return fmt.Errorf("node network: %w", err)
		}
	}
	return nil
}

// ipPool hands out the pod addresses of the node's prefix round robin, so
// that an address just freed is not reused at once.
type ipPool struct {
	mu     sync.Mutex
	prefix netip.Prefix
	node   netip.Addr
	used   map[netip.Addr]bool
	next   netip.Addr
}

func newIPPool(prefix netip.Prefix) (*ipPool, error) {
	prefix = prefix.Masked()
	if !prefix.Addr().Is4() || prefix.Bits() > 29 || prefix.Bits() < 16 {
		return nil, fmt.Errorf("pod CIDR %s: want an IPv4 prefix from /16 to /29", prefix)
	}
	node := prefix.Addr().Next()
	return &ipPool{prefix: prefix, node: node, used: map[netip.Addr]bool{}, next: node.Next()}, nil
}

// broadcast reports whether a is the prefix's last address.
func (p *ipPool) broadcast(a netip.Addr) bool {
	return !p.prefix.Contains(a.Next())
}

func (p *ipPool) get() (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	start := p.next
	for a := start; ; {
		if !p.used[a] {
			p.used[a] = true
			p.next = a.Next()
			if !p.prefix.Contains(p.next) || p.broadcast(p.next) {
				p.next = p.node.Next()
			}
			return a, nil
		}
		a = a.Next()
		if !p.prefix.Contains(a) || p.broadcast(a) {
			a = p.node.Next()
		}
		if a == start {
			return netip.Addr{}, fmt.Errorf("no free pod address in %s", p.prefix)
		}
	}
}

func (p *ipPool) put(a netip.Addr) {
	p.mu.Lock()
	delete(p.used, a)
	p.mu.Unlock()
}

// sandbox is a pod's network namespace, held by a sleeping process the
// agent started, with eth0 (a veth link to the node's bridge) at the
// pod's address and a default route through the node.
type sandbox struct {
	cmd  *exec.Cmd
	ip   netip.Addr
	veth string // the node's end
}

// netns is the path of the sandbox's network namespace.
func (s *sandbox) netns() string { return fmt.Sprintf("/proc/%d/ns/net", s.cmd.Process.Pid) }

// newSandbox starts a pod's network namespace at ip.
func (a *Agent) newSandbox(ip netip.Addr) (*sandbox, error) {
	cmd := exec.Command("sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the pod sandbox (sleep infinity in a new network namespace): %w", err)
	}
	go cmd.Wait()
	off := ip.As4()
	s := &sandbox{cmd: cmd, ip: ip, veth: fmt.Sprintf("kv%d-%d", off[2], off[3])}
	pid := fmt.Sprint(cmd.Process.Pid)
	exec.Command("ip", "link", "del", s.veth).Run() // left by an earlier pod whose namespace is still going away
	steps := [][]string{
		{"ip", "link", "add", s.veth, "type", "veth", "peer", "name", "eth0", "netns", pid},
		{"ip", "link", "set", s.veth, "master", bridgeName, "up"},
		{"nsenter", "--net=" + s.netns(), "sh", "-c", fmt.Sprintf(
			"set -e; ip link set lo up; ip addr add %s/%d dev eth0; ip link set eth0 up; ip route add default via %s",
			ip, a.pool.prefix.Bits(), a.pool.node)},
	}
	for _, st := range steps {
		if err := ipCmd(st[0], st[1:]...); err != nil {
			s.close()
			return nil, fmt.Errorf("pod network: %w", err)
		}
	}
	return s, nil
}

// close removes the sandbox's link and ends its process.
func (s *sandbox) close() {
	exec.Command("ip", "link", "del", s.veth).Run()
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
}
