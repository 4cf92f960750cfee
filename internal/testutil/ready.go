package testutil

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// pollReady calls check every 50 ms until it succeeds, the process behind
// it exits (done closes) or timeout passes; it returns check's last error.
func pollReady(done <-chan struct{}, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("it exited")
		default:
		}
		if last = check(); last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return last
}

// httpGet fetches url and fails unless it answers 200.
func httpGet(c *http.Client, url string) ([]byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return b, fmt.Errorf("%s answered %d", url, resp.StatusCode)
	}
	return b, nil
}

// tcpAccepts reports whether addr accepts a TCP connection.
func tcpAccepts(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return conn.Close()
}
