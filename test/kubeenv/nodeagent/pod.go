package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Restart back-off of crashed containers: immediate, then doubling from
// one second to at most ten (the kubelet's is 10 s to 5 min), reset after
// a run of a minute.
const (
	backoffStart = time.Second
	backoffMax   = 10 * time.Second
	backoffReset = time.Minute
)

// container is the agent's record of one container of a pod.
type container struct {
	spec    *corev1.Container
	init    bool // an init container
	sidecar bool // an init container with restartPolicy Always

	run        *process // the current run, nil when not running
	runs       int      // starts so far
	waiting    *corev1.ContainerStateWaiting
	running    *corev1.ContainerStateRunning
	terminated *corev1.ContainerStateTerminated
	last       *corev1.ContainerStateTerminated
	restarts   int32
	imageID    string
	id         string
	done       bool // terminated and not restarting
	retryAt    time.Time
	backoff    time.Duration

	ready     bool
	startupOK bool
	readiness *prober
	liveness  *prober
	startup   *prober
	listenMsg string
}

// process is one run of a container.
type process struct {
	cmd    *exec.Cmd
	n      int // the container's run number
	exited chan struct{}
}

type exitEvent struct {
	c    *container
	n    int
	code int32
	sig  string
	at   time.Time
}

// worker runs one pod bound to the node, from its sandbox to its
// finalization. All its state but latest/gone belongs to its goroutine.
type worker struct {
	a        *Agent
	uid      types.UID
	ns, name string
	wake     chan struct{}
	done     chan struct{}

	mu     sync.Mutex
	latest *corev1.Pod
	gone   bool

	dir       string
	sb        *sandbox
	podIP     string
	netErr    string
	netRetry  time.Time
	vols      map[string]volumeDir
	volErr    string
	volRetry  time.Time
	volFailed bool // for good
	inits     []*container
	ctrs      []*container
	exits     chan exitEvent
	startTime metav1.Time
	initFail  bool // an init container failed with restartPolicy Never
	terminal  bool
	conds     map[corev1.PodConditionType]corev1.PodCondition
	written   *corev1.PodStatus
}

func newWorker(a *Agent, pod *corev1.Pod) *worker {
	w := &worker{
		a: a, uid: pod.UID, ns: pod.Namespace, name: pod.Name,
		wake: make(chan struct{}, 1), done: make(chan struct{}),
		latest:    pod,
		dir:       filepath.Join(a.cfg.StateDir, "pods", string(pod.UID)),
		startTime: metav1.NewTime(time.Now().Truncate(time.Second)),
		conds:     map[corev1.PodConditionType]corev1.PodCondition{},
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		w.inits = append(w.inits, &container{spec: c, init: true, sidecar: c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways})
	}
	for i := range pod.Spec.Containers {
		w.ctrs = append(w.ctrs, &container{spec: &pod.Spec.Containers[i]})
	}
	w.exits = make(chan exitEvent, len(w.inits)+len(w.ctrs)+1)
	return w
}

// notify hands the worker the newest Pod (nil: deleted from the API).
func (w *worker) notify(pod *corev1.Pod) {
	w.mu.Lock()
	if pod == nil {
		w.gone = true
	} else {
		w.latest = pod
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) snapshot() (*corev1.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest, w.gone
}

func (w *worker) logf(msg string, args ...any) {
	w.a.log.Info(msg, append([]any{"pod", w.ns + "/" + w.name}, args...)...)
}

func (w *worker) run(ctx context.Context) {
	defer close(w.done)
	defer w.a.forget(w.uid)
	for {
		pod, gone := w.snapshot()
		if gone || ctx.Err() != nil {
			w.killAll(0)
			w.teardown()
			return
		}
		if pod.DeletionTimestamp != nil {
			grace := int64(0)
			if pod.DeletionGracePeriodSeconds != nil {
				grace = *pod.DeletionGracePeriodSeconds
			}
			w.killAll(time.Duration(grace) * time.Second)
			w.teardown()
			w.finalize(ctx, pod)
			return
		}
		next := w.step(ctx, pod)
		if !w.writeStatus(ctx, pod) {
			if retry := time.Now().Add(time.Second); next.IsZero() || retry.Before(next) {
				next = retry
			}
		}
		var timer *time.Timer
		var tc <-chan time.Time
		if !next.IsZero() {
			timer = time.NewTimer(max(time.Until(next), 10*time.Millisecond))
			tc = timer.C
		}
		select {
		case <-ctx.Done():
		case <-w.wake:
		case ev := <-w.exits:
			w.onExit(ev)
		case <-tc:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// step moves the pod on: sandbox, volumes, init containers, containers,
// restarts and probes. It returns when it next has something to do.
func (w *worker) step(ctx context.Context, pod *corev1.Pod) time.Time {
	if w.terminal {
		return time.Time{}
	}
	if w.allDone() {
		w.finish()
		return time.Time{}
	}
	now := time.Now()
	if w.sb == nil {
		if now.Before(w.netRetry) {
			return w.netRetry
		}
		ip, err := w.a.pool.get()
		if err == nil {
			w.sb, err = w.a.newSandbox(ip)
			if err != nil {
				w.a.pool.put(ip)
			}
		}
		if err != nil {
			w.netErr = err.Error()
			w.netRetry = now.Add(time.Second)
			w.logf("pod network failed", "err", err)
			return w.netRetry
		}
		w.netErr = ""
		w.podIP = w.sb.ip.String()
	}
	info := podInfo{pod: pod, podIP: w.podIP, hostIP: w.a.pool.node.String()}
	if w.vols == nil {
		if w.volFailed {
			return time.Time{}
		}
		if now.Before(w.volRetry) {
			return w.volRetry
		}
		vols, err := w.a.prepareVolumes(ctx, info, w.dir)
		if err != nil {
			w.volErr = err.Error()
			var perm permanentError
			if errors.As(err, &perm) {
				w.volFailed = true
				return time.Time{}
			}
			w.volRetry = now.Add(time.Second)
			return w.volRetry
		}
		w.vols, w.volErr = vols, ""
	}
	var next time.Time
	due := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	// Init containers, in order; a sidecar only has to have started.
	for _, c := range w.inits {
		if c.run == nil && !c.done {
			due(w.maybeStart(ctx, info, c, now))
		}
		if c.run != nil {
			due(w.probe(ctx, c))
		}
		if c.sidecar && (c.run == nil || !c.startupOK) || !c.sidecar && !c.done {
			return next
		}
		if !c.sidecar && c.terminated != nil && c.terminated.ExitCode != 0 {
			return next // failed for good: onExit made the pod terminal
		}
	}
	for _, c := range w.ctrs {
		if c.run == nil && !c.done {
			due(w.maybeStart(ctx, info, c, now))
		}
		if c.run != nil {
			due(w.probe(ctx, c))
		}
	}
	if w.allDone() {
		w.finish()
		return time.Time{}
	}
	return next
}

// allDone reports whether no container of the pod runs or will run again.
func (w *worker) allDone() bool {
	if w.initFail {
		return true
	}
	for _, c := range w.ctrs {
		if !c.done {
			return false
		}
	}
	return true
}

// finish ends a pod whose containers have all terminated for good: its
// sidecars stop and its sandbox goes; its status keeps its address.
func (w *worker) finish() {
	w.terminal = true
	w.killAll(0)
	if w.sb != nil {
		w.sb.close()
		w.a.pool.put(w.sb.ip)
		w.sb = nil
	}
}

// maybeStart starts container c when it is due.
func (w *worker) maybeStart(ctx context.Context, info podInfo, c *container, now time.Time) time.Time {
	if now.Before(c.retryAt) {
		return c.retryAt
	}
	wait := func(reason, msg string, retry time.Duration) time.Time {
		c.waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
		if retry == 0 {
			c.retryAt = time.Time{}
			return time.Time{}
		}
		c.retryAt = now.Add(retry)
		return c.retryAt
	}
	img, ok := lookupImage(w.a.cfg.Images, c.spec.Image)
	if !ok {
		return wait("ImageNotMapped", fmt.Sprintf("kubeenv: no local executable for image %q (repository %q): add it to the node agent's images (kubeenv.Options.Images)", c.spec.Image, ImageRepository(c.spec.Image)), 0)
	}
	hostname := info.pod.Spec.Hostname
	if hostname == "" {
		hostname = info.pod.Name
	}
	if len(hostname) > 63 {
		hostname = hostname[:63]
	}
	env, vals, err := w.a.containerEnv(ctx, info, c.spec, img, hostname)
	if err != nil {
		return wait("CreateContainerConfigError", "kubeenv: "+err.Error(), time.Second)
	}
	args, err := argv(img, c.spec, vals)
	if err != nil {
		return wait("CommandNotInImage", "kubeenv: "+err.Error(), 0)
	}
	mounts, err := containerMounts(c.spec, w.vols)
	if err != nil {
		return wait("CreateContainerConfigError", "kubeenv: "+err.Error(), 0)
	}
	dir := c.spec.WorkingDir
	if dir == "" {
		dir = "/"
	}
	spec := execSpec{
		NetNS:    w.sb.netns(),
		Hostname: hostname,
		Shadow:   filepath.Join(w.dir, "shadow", fmt.Sprintf("%s-%d", c.spec.Name, c.runs)),
		Mounts:   mounts,
		Dir:      dir,
		Path:     img.Path,
		Argv:     args,
		Env:      env,
	}
	p, err := w.spawn(c, spec, c.runs+1)
	if err != nil {
		w.logf("container did not start", "container", c.spec.Name, "err", err)
		c.backoff = nextBackoff(c.backoff)
		return wait("RunContainerError", "kubeenv: "+err.Error(), c.backoff)
	}
	if c.runs > 0 {
		c.restarts++
	}
	c.runs++
	c.run = p
	c.id = fmt.Sprintf("kubeenv://%s-%s-%d", w.uid, c.spec.Name, c.runs)
	c.imageID = "kubeenv://" + img.Path
	c.waiting, c.terminated = nil, nil
	started := time.Now()
	c.running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(started.Truncate(time.Second))}
	c.ready, c.listenMsg = false, ""
	c.startup = newProber(c.spec.StartupProbe, started)
	c.startupOK = c.startup == nil
	c.liveness = newProber(c.spec.LivenessProbe, started)
	c.readiness = newProber(c.spec.ReadinessProbe, started)
	w.logf("container started", "container", c.spec.Name, "pid", p.cmd.Process.Pid, "argv", args)
	return now
}

func nextBackoff(b time.Duration) time.Duration {
	if b == 0 {
		return backoffStart
	}
	return min(2*b, backoffMax)
}

// spawn starts the container init (this binary, see containerinit.go) in
// a new mount and UTS namespace and waits until it has exec'd the
// container's executable or failed.
func (w *worker) spawn(c *container, spec execSpec, n int) (*process, error) {
	logFile, err := w.a.startLog(w.ns, w.name, c.spec.Name, n)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		specR.Close()
		specW.Close()
		return nil, err
	}
	cmd := exec.Command(w.a.self)
	cmd.Args = []string{"kubeenv-container " + w.ns + "/" + w.name + "/" + c.spec.Name}
	cmd.Env = []string{execEnv + "=1"}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{specR, errW}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Unshareflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
		Pdeathsig:    syscall.SIGKILL,
		Setpgid:      true,
	}
	err = cmd.Start()
	specR.Close()
	errW.Close()
	if err != nil {
		specW.Close()
		errR.Close()
		return nil, fmt.Errorf("start the container init %s: %w", w.a.self, err)
	}
	json.NewEncoder(specW).Encode(spec)
	specW.Close()
	errR.SetReadDeadline(time.Now().Add(30 * time.Second))
	msg, rerr := io.ReadAll(errR)
	errR.Close()
	if len(msg) > 0 || rerr != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if len(msg) == 0 {
			return nil, fmt.Errorf("container init: %w", rerr)
		}
		return nil, errors.New(string(msg))
	}
	p := &process{cmd: cmd, n: n, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		ev := exitEvent{c: c, n: n, at: time.Now()}
		if ps := cmd.ProcessState; ps != nil {
			ev.code = int32(ps.ExitCode())
			if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				ev.code = 128 + int32(ws.Signal())
				ev.sig = ws.Signal().String()
			}
		}
		close(p.exited)
		select {
		case w.exits <- ev:
		case <-w.done:
		}
	}()
	return p, nil
}

// probe runs container c's due probes; it returns when next due.
func (w *worker) probe(ctx context.Context, c *container) time.Time {
	now := time.Now()
	var next time.Time
	due := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if !c.startupOK {
		due(c.startup.run(ctx, w.podIP, c.spec, now))
		if c.startup.result {
			c.startupOK = true
		} else if c.startup.failures >= defaulted(c.startup.p.FailureThreshold, 3) {
			w.logf("startup probe failed: restarting", "container", c.spec.Name, "message", c.startup.message)
			syscall.Kill(-c.run.cmd.Process.Pid, syscall.SIGKILL)
			return time.Time{}
		}
		if !c.startupOK {
			return next
		}
	}
	if c.liveness != nil {
		due(c.liveness.run(ctx, w.podIP, c.spec, now))
		if c.liveness.failures >= defaulted(c.liveness.p.FailureThreshold, 3) {
			w.logf("liveness probe failed: restarting", "container", c.spec.Name, "message", c.liveness.message)
			syscall.Kill(-c.run.cmd.Process.Pid, syscall.SIGKILL)
			return time.Time{}
		}
	}
	switch {
	case c.readiness != nil:
		due(c.readiness.run(ctx, w.podIP, c.spec, now))
		c.ready = c.readiness.result
	case !c.ready:
		c.ready, c.listenMsg = portsListen(ctx, w.podIP, c.spec)
		if !c.ready {
			due(now.Add(100 * time.Millisecond))
		}
	}
	return next
}

// onExit records the end of a container's run and decides on its restart.
func (w *worker) onExit(ev exitEvent) {
	c := ev.c
	if c.run == nil || c.run.n != ev.n {
		return
	}
	reason := "Completed"
	if ev.code != 0 {
		reason = "Error"
	}
	started := c.running.StartedAt
	c.terminated = &corev1.ContainerStateTerminated{
		ExitCode: ev.code, Reason: reason, StartedAt: started,
		FinishedAt: metav1.NewTime(ev.at.Truncate(time.Second)), ContainerID: c.id,
	}
	if ev.sig != "" {
		c.terminated.Message = "killed by " + ev.sig
	}
	c.run, c.running, c.ready = nil, nil, false
	w.logf("container exited", "container", c.spec.Name, "code", ev.code)
	restart := false
	switch {
	case c.sidecar:
		restart = !w.terminal
	case c.init:
		restart = ev.code != 0 && w.latestPolicy() != corev1.RestartPolicyNever
		if ev.code != 0 && !restart {
			w.initFail = true
		}
	default:
		switch w.latestPolicy() {
		case corev1.RestartPolicyAlways:
			restart = true
		case corev1.RestartPolicyOnFailure:
			restart = ev.code != 0
		}
	}
	if !restart {
		c.done = true
		return
	}
	if ev.at.Sub(started.Time) > backoffReset {
		c.backoff = 0
	}
	if c.backoff > 0 || c.runs > 1 {
		c.backoff = nextBackoff(c.backoff)
	}
	c.last, c.terminated = c.terminated, nil
	c.retryAt = ev.at.Add(c.backoff)
	c.waiting = &corev1.ContainerStateWaiting{
		Reason:  "CrashLoopBackOff",
		Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", c.backoff, c.spec.Name, w.name, w.ns, w.uid),
	}
}

func (w *worker) latestPolicy() corev1.RestartPolicy {
	pod, _ := w.snapshot()
	if pod.Spec.RestartPolicy == "" {
		return corev1.RestartPolicyAlways
	}
	return pod.Spec.RestartPolicy
}

// killAll stops every running container: SIGTERM, then SIGKILL after
// grace (at once for 0, or when the agent stops).
func (w *worker) killAll(grace time.Duration) {
	var running []*process
	for _, c := range slices.Concat(w.ctrs, w.inits) {
		if c.run != nil {
			running = append(running, c.run)
		}
	}
	sig := syscall.SIGTERM
	if grace == 0 {
		sig = syscall.SIGKILL
	}
	for _, p := range running {
		syscall.Kill(-p.cmd.Process.Pid, sig)
	}
	deadline := time.After(grace)
	for _, p := range running {
		select {
		case <-p.exited:
			continue
		case <-deadline:
		case <-w.a.ctx.Done(): // the agent stops: no more grace
		}
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
	for _, c := range slices.Concat(w.ctrs, w.inits) {
		if c.run == nil {
			continue
		}
		code := int32(137)
		if ps := c.run.cmd.ProcessState; ps != nil && ps.ExitCode() >= 0 {
			code = int32(ps.ExitCode())
		}
		reason := "Error"
		if code == 0 {
			reason = "Completed"
		}
		c.terminated = &corev1.ContainerStateTerminated{
			ExitCode: code, Reason: reason, StartedAt: c.running.StartedAt,
			FinishedAt: metav1.NewTime(time.Now().Truncate(time.Second)), ContainerID: c.id,
		}
		c.run, c.running, c.ready, c.done = nil, nil, false, true
	}
}

// teardown removes the pod's network and files.
func (w *worker) teardown() {
	if w.sb != nil {
		w.sb.close()
		w.a.pool.put(w.sb.ip)
		w.sb = nil
	}
	os.RemoveAll(w.dir)
}

// finalize deletes the terminated pod for good, as the kubelet does once
// its containers are gone.
func (w *worker) finalize(ctx context.Context, pod *corev1.Pod) {
	zero := int64(0)
	err := w.a.client.CoreV1().Pods(w.ns).Delete(ctx, w.name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero,
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		w.logf("finalize pod", "err", err)
	}
	w.logf("pod finalized")
}

// status is the pod's status as the agent sees it.
func (w *worker) status(pod *corev1.Pod) corev1.PodStatus {
	node := w.a.pool.node.String()
	st := corev1.PodStatus{
		HostIP:    node,
		HostIPs:   []corev1.HostIP{{IP: node}},
		StartTime: &w.startTime,
		QOSClass:  pod.Status.QOSClass,
	}
	if w.podIP != "" {
		st.PodIP = w.podIP
		st.PodIPs = []corev1.PodIP{{IP: w.podIP}}
	}
	initialized := true
	var notInit, notReady []string
	for _, c := range w.inits {
		if c.sidecar && !(c.run != nil && c.startupOK) || !c.sidecar && !(c.terminated != nil && c.terminated.ExitCode == 0 && c.done) {
			initialized = false
			notInit = append(notInit, c.spec.Name)
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, w.containerStatus(c, "PodInitializing"))
	}
	waitReason := "ContainerCreating"
	if !initialized {
		waitReason = "PodInitializing"
	}
	var waiting, succeeded int
	for _, c := range w.ctrs {
		st.ContainerStatuses = append(st.ContainerStatuses, w.containerStatus(c, waitReason))
		switch {
		case c.run != nil:
		case c.done && c.terminated != nil && c.terminated.ExitCode == 0:
			succeeded++
		case !c.done && c.last == nil:
			waiting++
		}
		if !c.ready {
			notReady = append(notReady, c.spec.Name)
		}
	}
	for _, c := range w.inits {
		if c.sidecar && !c.ready {
			notReady = append(notReady, c.spec.Name)
		}
	}
	switch {
	case w.initFail:
		st.Phase = corev1.PodFailed
	case !initialized:
		st.Phase = corev1.PodPending
	case w.allDone():
		st.Phase = corev1.PodFailed
		if succeeded == len(w.ctrs) {
			st.Phase = corev1.PodSucceeded
		}
	case waiting > 0:
		st.Phase = corev1.PodPending
	default:
		st.Phase = corev1.PodRunning
	}
	containersReady := len(notReady) == 0 && st.Phase == corev1.PodRunning
	var gatesNotReady []string
	for _, g := range pod.Spec.ReadinessGates {
		ok := false
		for _, pc := range pod.Status.Conditions {
			if pc.Type == g.ConditionType && pc.Status == corev1.ConditionTrue {
				ok = true
			}
		}
		if !ok {
			gatesNotReady = append(gatesNotReady, string(g.ConditionType))
		}
	}
	cond := func(t corev1.PodConditionType, ok bool, reason, msg string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, Message: msg}
		if ok {
			c.Status, c.Reason, c.Message = corev1.ConditionTrue, "", ""
		}
		prev, seen := w.conds[t]
		if seen && prev.Status == c.Status {
			c.LastTransitionTime = prev.LastTransitionTime
		} else {
			c.LastTransitionTime = metav1.NewTime(time.Now().Truncate(time.Second))
		}
		w.conds[t] = c
		return c
	}
	terminalReason := "ContainersNotReady"
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		terminalReason = "PodCompleted"
	}
	readyReason, readyMsg := terminalReason, fmt.Sprintf("containers with unready status: [%s]", strings.Join(notReady, " "))
	if containersReady && len(gatesNotReady) > 0 {
		readyReason, readyMsg = "ReadinessGatesNotReady", fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist or is not true", gatesNotReady[0])
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, w.sb != nil || w.terminal, "", ""),
		cond(corev1.PodInitialized, initialized, "ContainersNotInitialized", fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(notInit, " "))),
		cond(corev1.PodReady, containersReady && len(gatesNotReady) == 0, readyReason, readyMsg),
		cond(corev1.ContainersReady, containersReady, terminalReason, fmt.Sprintf("containers with unready status: [%s]", strings.Join(notReady, " "))),
		cond(corev1.PodScheduled, true, "", ""),
	}
	return st
}

func (w *worker) containerStatus(c *container, waitReason string) corev1.ContainerStatus {
	started := c.run != nil && c.startupOK
	cs := corev1.ContainerStatus{
		Name: c.spec.Name, Image: c.spec.Image, ImageID: c.imageID, ContainerID: c.id,
		Ready: c.ready, RestartCount: c.restarts, Started: &started,
	}
	switch {
	case c.running != nil:
		cs.State.Running = c.running
	case c.terminated != nil:
		cs.State.Terminated = c.terminated
	case c.waiting != nil:
		cs.State.Waiting = c.waiting
	default:
		msg := ""
		switch {
		case w.netErr != "":
			msg = "kubeenv: " + w.netErr
		case w.volErr != "":
			msg = "kubeenv: " + w.volErr
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: waitReason, Message: msg}
	}
	if c.last != nil {
		cs.LastTerminationState.Terminated = c.last
	}
	return cs
}

// writeStatus writes the pod's status when it changed since the last write.
// It reports false when the write failed and should be tried again.
func (w *worker) writeStatus(ctx context.Context, pod *corev1.Pod) bool {
	st := w.status(pod)
	if w.written != nil && equality.Semantic.DeepEqual(&st, w.written) {
		return true
	}
	base := pod
	for attempt := 0; attempt < 5; attempt++ {
		p := base.DeepCopy()
		ours := map[corev1.PodConditionType]bool{}
		for _, c := range st.Conditions {
			ours[c.Type] = true
		}
		conds := slices.Clone(st.Conditions)
		for _, c := range p.Status.Conditions {
			if !ours[c.Type] {
				conds = append(conds, c)
			}
		}
		nominated := p.Status.NominatedNodeName
		p.Status = *st.DeepCopy()
		p.Status.Conditions = conds
		p.Status.NominatedNodeName = nominated
		if p.Status.QOSClass == "" {
			p.Status.QOSClass = base.Status.QOSClass
		}
		_, err := w.a.client.CoreV1().Pods(w.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		if err == nil {
			w.written = &st
			return true
		}
		if apierrors.IsNotFound(err) || ctx.Err() != nil {
			return true
		}
		if !apierrors.IsConflict(err) {
			w.logf("write pod status", "err", err)
			return false
		}
		fresh, err := w.a.client.CoreV1().Pods(w.ns).Get(ctx, w.name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		if fresh.UID != w.uid {
			return true
		}
		base = fresh
	}
	return false
}
