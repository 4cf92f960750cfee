package xdsgen

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/server"
)

func validateFile(t *testing.T, list []json.RawMessage, log *slog.Logger) error {
	b, _ := json.Marshal(map[string]any{"resources": list})
	path := filepath.Join(t.TempDir(), "r.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := server.ValidateResourceFile(path, log)
	return err
}

// TestSidecarResourcesCompile compiles every sidecar resource with the
// proxy's own compile path (legate validate of a resource file): anything
// refused is a generator bug or a proxy gap.
func TestSidecarResourcesCompile(t *testing.T) {
	objs := sidecarObjects(t)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	for _, tc := range sidecarCases() {
		t.Run(tc.name, func(t *testing.T) {
			r := Sidecar(objs, tc.node, tc.opt)
			byType := map[string][]proto.Message{}
			for _, m := range sidecarMessages(r) {
				k := string(m.ProtoReflect().Descriptor().FullName())
				byType[k] = append(byType[k], m)
			}
			for typ, msgs := range byType {
				var list []json.RawMessage
				for _, m := range msgs {
					j, err := protojson.Marshal(mustAny(m))
					if err != nil {
						t.Fatal(err)
					}
					list = append(list, j)
				}
				err := validateFile(t, list, log)
				if err == nil {
					continue
				}
				for _, line := range strings.Split(err.Error(), "\n") {
					if line = strings.TrimSpace(line); line != "" {
						t.Errorf("%s: the proxy refuses: %s", typ, line)
					}
				}
			}
		})
	}
}
