package nodeagent

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Container output is kept as the kubelet keeps it: one file per run of a
// container (logs/<namespace>_<pod>_<container>/<run>.log), each line
// prefixed with the time it was read and its stream ("<RFC 3339 time>
// stdout <line>"), so that the pods/log API (sinceTime, tailLines,
// previous, timestamps) can be answered.

// logDir is the folder of a container's runs.
func (a *Agent) logDir(ns, pod, ctr string) string {
	return filepath.Join(a.cfg.StateDir, "logs", ns+"_"+pod+"_"+ctr)
}

// startLog returns the writing end for a run's stdout and stderr; the
// process gets it and this agent's copy is closed after the start. Lines
// are stamped and written until every holder has closed it.
func (a *Agent) startLog(ns, pod, ctr string, run int) (*os.File, error) {
	dir := a.logDir(ns, pod, ctr)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(run)+".log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		f.Close()
		return nil, err
	}
	go func() {
		defer f.Close()
		defer r.Close()
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				if !strings.HasSuffix(line, "\n") {
					line += "\n"
				}
				fmt.Fprintf(f, "%s stdout %s", time.Now().UTC().Format(time.RFC3339Nano), line)
			}
			if err != nil {
				return
			}
		}
	}()
	return w, nil
}

// runs lists the run numbers of a container's logs, oldest first.
func (a *Agent) runs(ns, pod, ctr string) []int {
	entries, _ := os.ReadDir(a.logDir(ns, pod, ctr))
	var runs []int
	for _, e := range entries {
		if n, err := strconv.Atoi(strings.TrimSuffix(e.Name(), ".log")); err == nil {
			runs = append(runs, n)
		}
	}
	sort.Ints(runs)
	return runs
}

// logLine is one stamped line of a log file.
type logLine struct {
	at   time.Time
	text string // with its newline
	raw  string // as stored
}

func readLogFile(path string) ([]logLine, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []logLine
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l == "" {
			continue
		}
		ts, rest, _ := strings.Cut(l, " ")
		_, text, _ := strings.Cut(rest, " ")
		at, _ := time.Parse(time.RFC3339Nano, ts)
		out = append(out, logLine{at: at, text: text, raw: l})
	}
	return out, nil
}

// logQuery selects lines of a container's log, as PodLogOptions does.
type logQuery struct {
	previous   bool
	since      time.Time
	tail       int // lines from the end; < 0: all
	timestamps bool
	limit      int64 // bytes; 0: no limit
}

// queryLog answers q from the container's current (or previous) run.
func (a *Agent) queryLog(ns, pod, ctr string, q logQuery) (string, error) {
	runs := a.runs(ns, pod, ctr)
	i := len(runs) - 1
	if q.previous {
		i--
	}
	if i < 0 {
		if q.previous {
			return "", fmt.Errorf("previous terminated container %q in pod %q not found", ctr, pod)
		}
		return "", fmt.Errorf("container %q in pod %q has not started", ctr, pod)
	}
	lines, err := readLogFile(filepath.Join(a.logDir(ns, pod, ctr), strconv.Itoa(runs[i])+".log"))
	if err != nil {
		return "", err
	}
	var sel []logLine
	for _, l := range lines {
		if q.since.IsZero() || !l.at.Before(q.since) {
			sel = append(sel, l)
		}
	}
	if q.tail >= 0 && len(sel) > q.tail {
		sel = sel[len(sel)-q.tail:]
	}
	var b strings.Builder
	for _, l := range sel {
		if q.timestamps {
			b.WriteString(l.at.Format(time.RFC3339Nano) + " " + l.text)
		} else {
			b.WriteString(l.text)
		}
	}
	s := b.String()
	if q.limit > 0 && int64(len(s)) > q.limit {
		s = s[:q.limit]
	}
	return s, nil
}

// ContainerLog returns what a container wrote (stdout and stderr
// interleaved, without timestamps), every run of it in order.
func (a *Agent) ContainerLog(namespace, pod, container string) (string, error) {
	runs := a.runs(namespace, pod, container)
	if len(runs) == 0 {
		return "", fmt.Errorf("container %s/%s/%s has not run", namespace, pod, container)
	}
	var b strings.Builder
	for _, r := range runs {
		lines, err := readLogFile(filepath.Join(a.logDir(namespace, pod, container), strconv.Itoa(r)+".log"))
		if err != nil {
			return "", err
		}
		for _, l := range lines {
			b.WriteString(l.text)
		}
	}
	return b.String(), nil
}

// ContainerLogs returns the output of every container that ran (as
// ContainerLog), by "namespace/pod/container".
func (a *Agent) ContainerLogs() map[string]string {
	out := map[string]string{}
	dirs, _ := os.ReadDir(filepath.Join(a.cfg.StateDir, "logs"))
	for _, d := range dirs {
		parts := strings.SplitN(d.Name(), "_", 3)
		if len(parts) != 3 {
			continue
		}
		if s, err := a.ContainerLog(parts[0], parts[1], parts[2]); err == nil {
			out[strings.Join(parts, "/")] = s
		}
	}
	return out
}

// copyLog writes q's answer to w, then, when follow is set, what the run
// writes next until stop is closed.
func (a *Agent) copyLog(w io.Writer, flush func(), ns, pod, ctr string, q logQuery, follow bool, stop <-chan struct{}) error {
	s, err := a.queryLog(ns, pod, ctr, q)
	if err != nil {
		return err
	}
	io.WriteString(w, s)
	flush()
	if !follow {
		return nil
	}
	runs := a.runs(ns, pod, ctr)
	path := filepath.Join(a.logDir(ns, pod, ctr), strconv.Itoa(runs[len(runs)-1])+".log")
	seen := 0
	if lines, err := readLogFile(path); err == nil {
		seen = len(lines)
	}
	for {
		select {
		case <-stop:
			return nil
		case <-time.After(200 * time.Millisecond):
		}
		lines, err := readLogFile(path)
		if err != nil {
			return nil
		}
		for _, l := range lines[min(seen, len(lines)):] {
			if q.timestamps {
				io.WriteString(w, l.at.Format(time.RFC3339Nano)+" "+l.text)
			} else {
				io.WriteString(w, l.text)
			}
		}
		if len(lines) > seen {
			seen = len(lines)
			flush()
		}
	}
}
