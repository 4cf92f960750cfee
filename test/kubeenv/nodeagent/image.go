package nodeagent

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Image is what the agent runs for a container image: a local executable
// standing for the image's entrypoint.
type Image struct {
	// Path is the executable (absolute path).
	Path string
	// Entrypoint lists the names a container's command[0] may give the
	// image's entrypoint (e.g. "/coredns"); Path itself and its base name
	// always match. Any other command is refused: the agent has no image
	// file system to find it in.
	Entrypoint []string
	// Args is the image's default CMD, used when the container sets
	// neither command nor args.
	Args []string
	// Env is the image's environment (KEY=value), before the container's.
	Env []string
}

// ImageRepository returns an image reference without its tag and digest:
// "registry.k8s.io/gateway-api/echo-basic:v1.5.1" →
// "registry.k8s.io/gateway-api/echo-basic".
func ImageRepository(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		ref = ref[:i]
	}
	return ref
}

// lookupImage finds the Image of a reference: the exact reference first,
// then its repository (any tag or digest).
func lookupImage(images map[string]Image, ref string) (Image, bool) {
	if img, ok := images[ref]; ok {
		return img, true
	}
	img, ok := images[ImageRepository(ref)]
	return img, ok
}

// argv returns the command line of a container run from img, as the
// container runtime builds it: command replaces the entrypoint (and drops
// the image's CMD), args replace the CMD. $(VAR) references are expanded
// from env.
func argv(img Image, c *corev1.Container, env map[string]string) ([]string, error) {
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	var args []string
	for _, a := range c.Args {
		args = append(args, expand(a, lookup))
	}
	if len(c.Command) == 0 {
		if len(c.Args) == 0 {
			args = img.Args
		}
		return append([]string{img.Path}, args...), nil
	}
	cmd := make([]string, len(c.Command))
	for i, a := range c.Command {
		cmd[i] = expand(a, lookup)
	}
	name := cmd[0]
	if name != img.Path && filepath.Base(name) != filepath.Base(img.Path) && !slices.Contains(img.Entrypoint, name) {
		return nil, fmt.Errorf("command %q is not the entrypoint of image %s (kubeenv runs %s for it; its entrypoint names: %q): use the image's entrypoint or map another image in kubeenv.Options.Images", name, c.Image, img.Path, img.Entrypoint)
	}
	return append(append([]string{img.Path}, cmd[1:]...), args...), nil
}

// expand replaces $(VAR) with the value of VAR when it is defined and
// $$ with $, as Kubernetes expands env values, command and args; an
// undefined or unterminated reference stays as written.
func expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok && name != "" {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
