package cel

import (
	"net/netip"
	"testing"
	"time"

	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func TestMatches(t *testing.T) {
	req := &headers.Request{Method: "POST", Scheme: "https", Authority: "api.example", Path: "/v1/items?a=1"}
	req.Map.Add("user-agent", "curl/8")
	req.Map.Add("x-tag", "a")
	req.Map.Add("x-tag", "b")
	req.Map.Add("content-length", "12")
	md, _ := structpb.NewStruct(map[string]any{"sub": "alice"})
	info := &streaminfo.Info{
		StartTime:        time.Now(),
		Protocol:         "HTTP/2",
		ResponseCode:     503,
		DownstreamRemote: netip.MustParseAddrPort("10.1.2.3:4567"),
		DownstreamLocal:  netip.MustParseAddrPort("127.0.0.1:8080"),
		ConnectionID:     7,
		DynamicMetadata:  map[string]*structpb.Struct{"envoy.filters.http.jwt_authn": md},
		FilterState:      map[string]streaminfo.FilterStateValue{"k": streaminfo.StringObject("v")},
		UpstreamCluster:  "backend",
	}
	for _, tc := range []struct {
		expr string
		want bool
	}{
		{`request.path.startsWith("/v1/")`, true},
		{`request.url_path == "/v1/items" && request.query == "a=1"`, true},
		{`request.method == "POST" && request.host == "api.example" && request.scheme == "https"`, true},
		{`request.headers["x-tag"] == "a,b" && request.headers[":method"] == "POST"`, true},
		{`request.useragent.contains("curl") && request.size == 12`, true},
		{`request.protocol == "HTTP/2"`, true},
		{`source.address == "10.1.2.3:4567" && source.port == 4567 && destination.port == 8080`, true},
		{`connection.id == 7u && !connection.mtls`, true},
		{`response.code == 503`, true},
		{`metadata.filter_metadata["envoy.filters.http.jwt_authn"].sub == "alice"`, true},
		{`filter_state["k"] == b"v"`, true},
		{`xds.cluster_name == "backend"`, true},
		{`request.headers["missing"] == "x"`, false}, // an error is false
		{`request.path`, false},                      // not a boolean
		{`request.path.endsWith("/clusters")`, false},
	} {
		p, err := CompileText(tc.expr, "expr")
		if err != nil {
			t.Fatalf("%s: %v", tc.expr, err)
		}
		if got := p.Matches(req, info); got != tc.want {
			v, err := p.Eval(req, info)
			t.Errorf("%s = %v, want %v (value %v, error %v)", tc.expr, got, tc.want, v, err)
		}
	}
}

// TestParsedGlobalCall: Envoy's docs write startsWith as a global call
// with the string as the first argument; it evaluates as the member call.
func TestParsedGlobalCall(t *testing.T) {
	e := &exprpb.Expr{ExprKind: &exprpb.Expr_CallExpr{CallExpr: &exprpb.Expr_Call{
		Function: "startsWith",
		Args: []*exprpb.Expr{
			{Id: 2, ExprKind: &exprpb.Expr_SelectExpr{SelectExpr: &exprpb.Expr_Select{
				Operand: &exprpb.Expr{Id: 3, ExprKind: &exprpb.Expr_IdentExpr{IdentExpr: &exprpb.Expr_Ident{Name: "request"}}},
				Field:   "path"}}},
			{Id: 4, ExprKind: &exprpb.Expr_ConstExpr{ConstExpr: &exprpb.Constant{ConstantKind: &exprpb.Constant_StringValue{StringValue: "/v1/"}}}},
		}}}, Id: 1}
	p, err := CompileParsed(e, "condition")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{"/v1/x": true, "/v2/x": false} {
		if got := p.Matches(&headers.Request{Path: path}, nil); got != want {
			v, err := p.Eval(&headers.Request{Path: path}, nil)
			t.Errorf("%s: %v, want %v (%v %v)", path, got, want, v, err)
		}
	}
	if _, err := CompileText("request.path ==", "expr"); err == nil {
		t.Error("a syntax error compiled")
	}
}
