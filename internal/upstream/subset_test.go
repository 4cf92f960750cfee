package upstream

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/stats"
)

func subsetCluster(t *testing.T, subsetYAML string) (*Cluster, *stats.Store, error) {
	t.Helper()
	pc := &clusterv3.Cluster{}
	y := "name: web\ntype: STATIC\nlb_subset_config: " + subsetYAML + "\n"
	if _, err := config.Decode([]byte(y), pc, "cluster"); err != nil {
		t.Fatal(err)
	}
	st := stats.NewStore()
	c, err := Compile(pc, "cluster", Deps{Stats: st})
	return c, st, err
}

func mdHost(addr string, md map[string]any) *Host {
	s, err := structpb.NewStruct(md)
	if err != nil {
		panic(err)
	}
	return newHost(addr, HostConfig{Weight: 1, Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.lb": s}}})
}

func match(md map[string]any) *MetadataMatch {
	s, err := structpb.NewStruct(md)
	if err != nil {
		panic(err)
	}
	return NewMetadataMatch(s)
}

func setTestHosts(c *Cluster, hosts ...*Host) {
	c.mu.Lock()
	c.setHosts(hosts)
	c.mu.Unlock()
}

// picks returns the addresses n picks chose, with their counts.
func picks(c *Cluster, mm *MetadataMatch, n int) map[string]int {
	out := map[string]int{}
	for i := 0; i < n; i++ {
		h := c.Pick(&LBContext{MetadataMatch: mm})
		if h == nil {
			out["<nil>"]++
		} else {
			out[h.Address]++
		}
	}
	return out
}

func TestSubsetSelection(t *testing.T) {
	c, st, err := subsetCluster(t, `{fallback_policy: DEFAULT_SUBSET, default_subset: {stage: prod}, subset_selectors: [{keys: [version]}, {keys: [stage, version]}]}`)
	if err != nil {
		t.Fatal(err)
	}
	setTestHosts(c,
		mdHost("10.0.0.1:80", map[string]any{"version": "v1", "stage": "prod"}),
		mdHost("10.0.0.2:80", map[string]any{"version": "v1", "stage": "canary"}),
		mdHost("10.0.0.3:80", map[string]any{"version": "v2", "stage": "prod"}),
		mdHost("10.0.0.4:80", map[string]any{}),
	)
	// Subsets: version=v1, version=v2, (stage,version) × 3.
	if g := st.Gauge("cluster.web.lb_subsets_active").Value(); g != 5 {
		t.Errorf("lb_subsets_active = %d, want 5", g)
	}
	for _, tc := range []struct {
		mm   map[string]any
		want []string
	}{
		{map[string]any{"version": "v1"}, []string{"10.0.0.1:80", "10.0.0.2:80"}},
		{map[string]any{"version": "v2"}, []string{"10.0.0.3:80"}},
		{map[string]any{"version": "v1", "stage": "canary"}, []string{"10.0.0.2:80"}},
		// No such subset: the default subset (stage=prod).
		{map[string]any{"version": "v3"}, []string{"10.0.0.1:80", "10.0.0.3:80"}},
		// No selector has only "stage": fallback too.
		{map[string]any{"stage": "canary"}, []string{"10.0.0.1:80", "10.0.0.3:80"}},
		{nil, []string{"10.0.0.1:80", "10.0.0.3:80"}},
	} {
		var mm *MetadataMatch
		if tc.mm != nil {
			mm = match(tc.mm)
		}
		got := picks(c, mm, 40)
		if len(got) != len(tc.want) {
			t.Errorf("%v: picked %v, want %v", tc.mm, got, tc.want)
			continue
		}
		for _, w := range tc.want {
			if got[w] == 0 {
				t.Errorf("%v: picked %v, want %v", tc.mm, got, tc.want)
			}
		}
	}
	if v := st.Counter("cluster.web.lb_subsets_selected").Value(); v != 120 {
		t.Errorf("lb_subsets_selected = %d, want 120", v)
	}
	if v := st.Counter("cluster.web.lb_subsets_fallback").Value(); v != 120 {
		t.Errorf("lb_subsets_fallback = %d, want 120", v)
	}
	// An update drops v2 and adds v3: one subset family goes, one comes.
	setTestHosts(c,
		mdHost("10.0.0.1:80", map[string]any{"version": "v1", "stage": "prod"}),
		mdHost("10.0.0.2:80", map[string]any{"version": "v1", "stage": "canary"}),
		mdHost("10.0.0.5:80", map[string]any{"version": "v3", "stage": "prod"}),
	)
	if got := picks(c, match(map[string]any{"version": "v3"}), 5); got["10.0.0.5:80"] != 5 {
		t.Errorf("after update, v3 picked %v", got)
	}
	if v := st.Counter("cluster.web.lb_subsets_created").Value(); v != 7 {
		t.Errorf("lb_subsets_created = %d, want 7", v)
	}
	if v := st.Counter("cluster.web.lb_subsets_removed").Value(); v != 2 {
		t.Errorf("lb_subsets_removed = %d, want 2", v)
	}
	if g := st.Gauge("cluster.web.lb_subsets_active").Value(); g != 5 {
		t.Errorf("lb_subsets_active = %d, want 5", g)
	}
}

func TestSubsetFallbacks(t *testing.T) {
	hosts := func() []*Host {
		return []*Host{
			mdHost("10.0.0.1:80", map[string]any{"version": "v1", "stage": "prod"}),
			mdHost("10.0.0.2:80", map[string]any{"version": "v2", "stage": "canary"}),
		}
	}
	for _, tc := range []struct {
		name, cfg string
		mm        map[string]any
		want      string // address, or <nil>
		counter   string // counter that must have counted the picks
	}{
		{"no fallback", `{subset_selectors: [{keys: [version]}]}`, map[string]any{"version": "v9"}, "<nil>", ""},
		{"no metadata, no fallback", `{subset_selectors: [{keys: [version]}]}`, nil, "<nil>", ""},
		{"any endpoint", `{fallback_policy: ANY_ENDPOINT, subset_selectors: [{keys: [version]}]}`, map[string]any{"version": "v9"}, "", "lb_subsets_fallback"},
		{"empty default subset panics to any", `{fallback_policy: DEFAULT_SUBSET, default_subset: {stage: none}, panic_mode_any: true, subset_selectors: [{keys: [version]}]}`,
			map[string]any{"version": "v9"}, "", "lb_subsets_fallback_panic"},
		{"empty default subset", `{fallback_policy: DEFAULT_SUBSET, default_subset: {stage: none}, subset_selectors: [{keys: [version]}]}`,
			map[string]any{"version": "v9"}, "<nil>", ""},
		{"selector no fallback beats cluster fallback", `{fallback_policy: ANY_ENDPOINT, subset_selectors: [{keys: [version], fallback_policy: NO_FALLBACK}]}`,
			map[string]any{"version": "v9"}, "<nil>", ""},
		{"selector default subset", `{default_subset: {stage: canary}, subset_selectors: [{keys: [version], fallback_policy: DEFAULT_SUBSET}]}`,
			map[string]any{"version": "v9"}, "10.0.0.2:80", ""},
		{"keys subset", `{subset_selectors: [{keys: [version, stage], fallback_policy: KEYS_SUBSET, fallback_keys_subset: [stage]}, {keys: [stage]}]}`,
			map[string]any{"version": "v9", "stage": "prod"}, "10.0.0.1:80", "lb_subsets_selected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, st, err := subsetCluster(t, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			setTestHosts(c, hosts()...)
			var mm *MetadataMatch
			if tc.mm != nil {
				mm = match(tc.mm)
			}
			got := picks(c, mm, 20)
			if tc.want != "" && got[tc.want] != 20 {
				t.Errorf("picked %v, want %s", got, tc.want)
			}
			if tc.want == "" && (got["10.0.0.1:80"] == 0 || got["10.0.0.2:80"] == 0) {
				t.Errorf("picked %v, want both hosts", got)
			}
			if tc.counter != "" {
				if v := st.Counter("cluster.web." + tc.counter).Value(); v != 20 {
					t.Errorf("%s = %d, want 20", tc.counter, v)
				}
			}
		})
	}
}

func TestSubsetListAsAnyAndSingleHost(t *testing.T) {
	c, st, err := subsetCluster(t, `{list_as_any: true, subset_selectors: [{keys: [tag]}, {keys: [id], single_host_per_subset: true}]}`)
	if err != nil {
		t.Fatal(err)
	}
	setTestHosts(c,
		mdHost("10.0.0.1:80", map[string]any{"tag": []any{"a", "b"}, "id": "x"}),
		mdHost("10.0.0.2:80", map[string]any{"tag": "b", "id": "x"}),
	)
	if got := picks(c, match(map[string]any{"tag": "a"}), 10); got["10.0.0.1:80"] != 10 {
		t.Errorf("tag=a picked %v", got)
	}
	if got := picks(c, match(map[string]any{"tag": "b"}), 10); got["10.0.0.1:80"] == 0 || got["10.0.0.2:80"] == 0 {
		t.Errorf("tag=b picked %v", got)
	}
	if got := picks(c, match(map[string]any{"id": "x"}), 10); got["10.0.0.1:80"] != 10 {
		t.Errorf("id=x (single host) picked %v", got)
	}
	if g := st.Gauge("cluster.web.lb_subsets_single_host_per_subset_duplicate").Value(); g != 1 {
		t.Errorf("duplicates = %d, want 1", g)
	}
}

func TestSubsetMerge(t *testing.T) {
	route := match(map[string]any{"version": "v1", "stage": "prod"})
	s, _ := structpb.NewStruct(map[string]any{"version": "v2", "zone": "a"})
	m := route.Merge(s)
	if got, want := m.subsetKey(), match(map[string]any{"version": "v2", "stage": "prod", "zone": "a"}).subsetKey(); got != want {
		t.Errorf("merged %q, want %q", got, want)
	}
	if route.Len() != 2 {
		t.Errorf("merge changed the route's criteria")
	}
}

func TestSubsetConfigErrors(t *testing.T) {
	for _, tc := range []struct{ cfg, err string }{
		{`{scale_locality_weight: true}`, "cluster.lb_subset_config.scale_locality_weight: field LbSubsetConfig.scale_locality_weight is not supported"},
		{`{metadata_fallback_policy: FALLBACK_LIST}`, "cluster.lb_subset_config.metadata_fallback_policy: FALLBACK_LIST is not supported"},
		{`{subset_selectors: [{keys: [a, b], fallback_policy: KEYS_SUBSET}]}`, "fallback_keys_subset cannot be empty"},
		{`{subset_selectors: [{keys: [a, b], fallback_policy: KEYS_SUBSET, fallback_keys_subset: [c]}]}`, "must be a subset of selector keys"},
		{`{subset_selectors: [{keys: [a, b], fallback_policy: KEYS_SUBSET, fallback_keys_subset: [a, b]}]}`, "cannot be equal to keys"},
		{`{subset_selectors: [{keys: [a], fallback_keys_subset: [a]}]}`, "can be set only for KEYS_SUBSET"},
	} {
		_, _, err := subsetCluster(t, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want %q", tc.cfg, err, tc.err)
		}
	}
}
