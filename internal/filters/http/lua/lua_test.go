package lua_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

const cfg = `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: {{.Log}},
            log_format: {text_format: "%REQ(:PATH)% %RESPONSE_CODE% %DYNAMIC_METADATA(lua.test:seen)%\n"}}}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/named"}
                route: {cluster: backend}
                typed_per_filter_config:
                  lua: {"@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute, name: tagger}
              - match: {prefix: "/inline"}
                route: {cluster: backend}
                typed_per_filter_config:
                  lua:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute
                    source_code:
                      inline_string: |
                        function envoy_on_response(response_handle)
                          response_handle:headers():add("header_key_1", "header_value_1")
                        end
              - match: {prefix: "/trailers"}
                route: {cluster: side}
                typed_per_filter_config:
                  lua:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute
                    source_code:
                      inline_string: |
                        function envoy_on_response(response_handle)
                          response_handle:body()
                          local t = response_handle:trailers()
                          if t ~= nil then
                            t:add("x-lua-trailer", "added")
                            t:remove("x-drop")
                          end
                        end
              - match: {prefix: "/off"}
                route: {cluster: backend}
                typed_per_filter_config:
                  lua: {"@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute, disabled: true}
              - match: {prefix: "/", headers: [{name: x-lua-route, string_match: {exact: rerouted}}]}
                direct_response: {status: 200, body: {inline_string: rerouted by lua}}
              - match: {prefix: "/"}
                route: {cluster: backend}
          http_filters:
          - name: lua
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
              default_source_code:
                inline_string: |
                  local lib = require("lib.mylibrary")
                  function envoy_on_request(request_handle)
                    local h = request_handle:headers()
                    h:add("foo", lib.foobar())
                    h:replace("x-replaced", "new")
                    h:remove("x-secret")
                    local n = 0
                    for k, v in pairs(h) do n = n + 1 end
                    h:add("x-header-count", tostring(n))
                    h:add("x-path", h:get(":path"))
                    if h:get(":path") == "/deny" then
                      request_handle:respond({[":status"] = "403", ["x-lua"] = "denied"}, "nope from lua")
                    end
                    if h:get(":path") == "/reroute" then
                      h:add("x-lua-route", "rerouted")
                    end
                    if h:get(":path") == "/boom" then
                      error("a script error")
                    end
                    if h:get(":path") == "/call" then
                      local rh, rb = request_handle:httpCall("side", {[":method"] = "GET", [":path"] = "/side", [":authority"] = "side.example"}, "", 1000)
                      h:add("x-side", rh[":status"] .. " " .. rb)
                    end
                    if request_handle:headers():get(":method") == "POST" then
                      local body = request_handle:body()
                      h:add("x-body-length", tostring(body:length()))
                      body:setBytes(string.upper(body:getBytes(0, body:length())))
                      h:remove("content-length")
                    end
                    request_handle:streamInfo():dynamicMetadata():set("lua.test", "seen", "yes")
                    if h:get(":path") == "/x" then
                      request_handle:streamInfo():dynamicMetadata():set("lua.test", "truncate", "yes")
                    end
                    request_handle:logInfo("request seen")
                  end
                  function envoy_on_response(response_handle)
                    response_handle:headers():add("x-lua-response", response_handle:headers():get(":status"))
                    local md = response_handle:streamInfo():dynamicMetadata():get("lua.test")
                    if md ~= nil and md["truncate"] == "yes" then
                      local b = response_handle:body()
                      if b ~= nil and b:length() > 0 then
                        b:setBytes("[" .. b:getBytes(0, 8) .. "]")
                        response_handle:headers():remove("content-length")
                      end
                    end
                  end
              source_codes:
                tagger:
                  inline_string: |
                    function envoy_on_request(h) h:headers():add("x-tagged", "yes") end
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    type: STATIC
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Backend}}}}}}]}]}
  - name: side
    type: STATIC
    # Its /trailers answer's trailers cross HTTP/1 only with
    # enable_trailers, as in Envoy.
    http_protocol_options: {enable_trailers: true}
    load_assignment: {cluster_name: side, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Side}}}}}}]}]}
`

func TestLua(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "lib"), 0o755)
	// The library of Envoy's Lua example, found through package.path.
	os.WriteFile(filepath.Join(dir, "lib", "mylibrary.lua"), []byte("local M = {}\nfunction M.foobar() return \"bar\" end\nreturn M\n"), 0o644)
	t.Chdir(dir)
	up := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	side := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/trailers" {
			w.Header().Set("Trailer", "X-Keep, X-Drop")
			io.WriteString(w, "with trailers")
			w.Header().Set("X-Keep", "kept")
			w.Header().Set("X-Drop", "dropped")
			return
		}
		io.WriteString(w, "side-"+r.Host)
	}))
	_, bport := up.Host()
	_, sport := side.Host()
	logPath := filepath.Join(dir, "access.log")
	p := testutil.StartProxy(t, cfg, map[string]string{"Backend": bport, "Side": sport, "Log": logPath})
	do := func(method, path, body string, hdr ...string) (int, http.Header, string) {
		req, _ := http.NewRequest(method, p.URL("http", path), strings.NewReader(body))
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := testutil.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	code, h, body := do("GET", "/x", "", "x-replaced", "old", "x-secret", "s")
	if code != 200 || h.Get("x-lua-response") != "200" || body != "[upstream]" {
		t.Errorf("GET: %d x-lua-response=%q body=%q", code, h.Get("x-lua-response"), body)
	}
	if _, _, body = do("GET", "/named/echo", ""); !strings.Contains(body, "header:x-tagged=yes") {
		// /named runs the "tagger" source code, not the default one.
		t.Errorf("named source code did not run:\n%s", body)
	}
	resp, err := http.Get(p.URL("http", "/off/echo"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), "header:foo=") || resp.Header.Get("x-lua-response") != "" {
		t.Errorf("a disabled route ran the script:\n%s", b)
	}
	if _, h, _ = do("GET", "/inline", ""); h.Get("header_key_1") != "header_value_1" {
		t.Errorf("inline per-route code: %v", h)
	}
	if code, h, body = do("GET", "/deny", ""); code != 403 || body != "nope from lua" || h.Get("x-lua") != "denied" {
		t.Errorf("respond(): %d %q %v", code, body, h)
	}
	if code, _, _ = do("GET", "/boom", ""); code != 200 {
		t.Errorf("a script error must not fail the request: %d", code)
	}
	if n := p.Stat(t, "http.ingress.lua.errors"); n != 1 {
		t.Errorf("lua.errors = %d, want 1", n)
	}
	side0 := side.Hits()
	_, _, body = do("GET", "/call", "")
	if side.Hits() != side0+1 || !strings.Contains(body, "header:x-side=200 side-side.example") {
		t.Errorf("httpCall:\n%s", body)
	}
	// The request side needs the body: the script waits for it.
	_, _, body = do("POST", "/echo", "hello lua")
	if !strings.Contains(body, "header:x-body-length=9") {
		t.Errorf("request body:\n%s", body)
	}
	if !strings.Contains(body, "body=HELLO LUA") {
		t.Errorf("the script's setBytes did not reach the upstream:\n%s", body)
	}
	// The script's trailer changes reach the client.
	resp, err = testutil.H2CClient().Get(p.URL("http", "/trailers"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "with trailers" || resp.Trailer.Get("x-keep") != "kept" || resp.Trailer.Get("x-lua-trailer") != "added" || resp.Trailer.Get("x-drop") != "" {
		t.Errorf("trailers: %q %v", b, resp.Trailer)
	}
	// clear_route_cache (default true): the header the script adds picks
	// another route.
	if code, _, body = do("GET", "/reroute", ""); code != 200 || body != "rerouted by lua" {
		t.Errorf("route not re-picked after the script changed headers: %d %q", code, body)
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "/x 200 yes")
	}, "dynamic metadata set by the script is not in the access log")
}

func TestLuaRequestHeaders(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "lib"), 0o755)
	os.WriteFile(filepath.Join(dir, "lib", "mylibrary.lua"), []byte("local M = {}\nfunction M.foobar() return \"bar\" end\nreturn M\n"), 0o644)
	t.Chdir(dir)
	var seen http.Header
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.Header.Clone() }))
	_, bport := up.Host()
	p := testutil.StartProxy(t, cfg, map[string]string{"Backend": bport, "Side": bport, "Log": filepath.Join(dir, "a.log")})
	req, _ := http.NewRequest("GET", p.URL("http", "/x"), nil)
	req.Header.Set("x-replaced", "old")
	req.Header.Set("x-secret", "s")
	resp, err := testutil.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if seen.Get("foo") != "bar" || seen.Get("x-replaced") != "new" || seen.Get("x-secret") != "" || seen.Get("x-path") != "/x" || seen.Get("x-header-count") == "" {
		t.Errorf("upstream saw %v", seen)
	}
}
