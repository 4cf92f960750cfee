// Command idleconns opens many idle HTTP/1.1 keep-alive connections to a
// proxy and holds them open, so that the proxy's memory per idle
// downstream connection can be measured (bench/cmd/benchrun does this
// with 5,000 connections).
//
// It raises RLIMIT_NOFILE as far as the hard limit allows, opens -n TCP
// connections to -addr, sends one GET on each and reads its response (so
// that every connection has gone through a full request and sits in the
// proxy's keep-alive state), then prints
//
//	ready N
//
// on stdout and holds the connections until SIGINT/SIGTERM, until stdin
// is closed (with -stdin) or until -hold elapses. It exits 1 with a
// message on stderr if a connection cannot be opened or its request fails.
//
//	go run ./bench/cmd/idleconns -addr 127.0.0.1:18081 -n 5000 -hold 30s
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18081", "proxy address (host:port)")
	n := flag.Int("n", 5000, "connections to open")
	host := flag.String("host", "bench", "Host header of the request sent on each connection")
	hold := flag.Duration("hold", 0, "how long to hold the connections (0: until a signal)")
	stdin := flag.Bool("stdin", false, "also stop when stdin is closed")
	flag.Parse()

	if err := raiseNoFile(uint64(*n) + 64); err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
		os.Exit(1)
	}
	conns, err := open(*addr, *host, *n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
		os.Exit(1)
	}
	fmt.Printf("ready %d\n", len(conns))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	var timeout <-chan time.Time
	if *hold > 0 {
		timeout = time.After(*hold)
	}
	closed := make(chan struct{})
	if *stdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(closed)
		}()
	}
	select {
	case <-stop:
	case <-timeout:
	case <-closed:
	}
}

// raiseNoFile raises the soft RLIMIT_NOFILE to want, or to the hard limit
// if that is lower (an error then, since the connections would not fit).
func raiseNoFile(want uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= want {
		return nil
	}
	lim.Cur = min(want, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur < want {
		return fmt.Errorf("RLIMIT_NOFILE hard limit is %d, need %d (raise it with ulimit -n)", lim.Max, want)
	}
	return nil
}

// open dials n connections and makes one request on each, reading the
// whole response (status line, headers and a Content-Length body).
func open(addr, host string, n int) ([]net.Conn, error) {
	req := []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: idleconns\r\n\r\n")
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return conns, fmt.Errorf("connection %d: %w", i+1, err)
		}
		conns = append(conns, c)
		if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
			return conns, err
		}
		if _, err := c.Write(req); err != nil {
			return conns, fmt.Errorf("connection %d: %w", i+1, err)
		}
		if err := readResponse(bufio.NewReaderSize(c, 512)); err != nil {
			return conns, fmt.Errorf("connection %d: %w", i+1, err)
		}
		if err := c.SetDeadline(time.Time{}); err != nil {
			return conns, err
		}
	}
	return conns, nil
}

// readResponse reads one HTTP/1.1 response and fails unless it is a 200
// with a Content-Length body (what the benchmark upstream sends).
func readResponse(r *bufio.Reader) error {
	status, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if f := strings.Fields(status); len(f) < 2 || f[1] != "200" {
		return fmt.Errorf("response %q, want 200", strings.TrimSpace(status))
	}
	length := -1
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "content-length") {
			if _, err := fmt.Sscan(strings.TrimSpace(v), &length); err != nil {
				return fmt.Errorf("content-length %q: %w", v, err)
			}
		}
	}
	if length < 0 {
		return fmt.Errorf("response without Content-Length")
	}
	_, err = io.CopyN(io.Discard, r, int64(length))
	return err
}
