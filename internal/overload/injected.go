package overload

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	injectedv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/injected_resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/stats"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.resource_monitors.injected_resource", Category: extension.ResourceMonitor,
		Config: &injectedv3.InjectedResourceConfig{}, Factory: monitorFactory(injectedMonitor),
		Notes: "the pressure (0 to 1) is the file's content, read again when the file changes (Envoy re-reads it when a file is moved into place); for tests"})
}

// injectedMonitor is Envoy's injected_resource monitor, made for tests:
// the pressure is a number in a file. As Envoy, a file that cannot be
// read or parsed, or a value outside [0, 1], fails every update until the
// file changes (failed_updates), and the last good pressure stays.
func injectedMonitor(_ *Manager, name string, cfg proto.Message, path string, st *stats.Store) (*monitor, error) {
	c := cfg.(*injectedv3.InjectedResourceConfig)
	file := c.GetFilename()
	if file == "" {
		return nil, config.Errorf(config.Join(path, "filename"), "must name the file holding the pressure")
	}
	var (
		mu       sync.Mutex
		seen     bool
		lastMod  time.Time
		lastSize int64
		lastIno  uint64
		pressure float64
		lastErr  error
	)
	return newMonitor(name, st, func() (float64, error) {
		mu.Lock()
		defer mu.Unlock()
		fi, err := os.Stat(file)
		if err != nil {
			seen = false
			return 0, fmt.Errorf("injected resource %s: %w", file, err)
		}
		ino := inode(fi)
		if seen && fi.ModTime().Equal(lastMod) && fi.Size() == lastSize && ino == lastIno {
			return pressure, lastErr
		}
		seen, lastMod, lastSize, lastIno = true, fi.ModTime(), fi.Size(), ino
		pressure, lastErr = readInjected(file)
		return pressure, lastErr
	}), nil
}

// readInjected parses the file as Envoy does (absl::SimpleAtod, which
// allows surrounding whitespace).
func readInjected(file string) (float64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, fmt.Errorf("injected resource %s: %w", file, err)
	}
	p, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	if err != nil {
		return 0, fmt.Errorf("injected resource %s: failed to parse injected resource pressure: %w", file, err)
	}
	if p < 0 || p > 1 {
		return 0, errors.New("injected resource " + file + ": pressure out of range")
	}
	return p, nil
}
