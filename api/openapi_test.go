package api

import (
	"encoding/json"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
)

// contractRoutes are the routes of notes/api-contract.md, copied from the
// contract (not from the route table), so that a route missing from the
// table fails here.
var contractRoutes = []string{
	"POST /api/v1/studies",
	"GET /api/v1/jobs/{id}",
	"GET /api/v1/studies/{id}/result",
	"GET /api/v1/studies/{id}/series/{n}/heatmap.nii.gz",
	"GET /api/v1/studies/{id}/series/{n}/montage.png",
	"GET /api/v1/studies/{id}/series/{n}/overlay/{plane}/{index}.png",
	"GET /api/v1/studies/{id}/series/{n}/volume",
	"GET /api/v1/studies/{id}/series/{n}/volume.bin",
	"GET /api/v1/studies/{id}/series/{n}/heat.bin",
	"GET /api/v1/studies/{id}/report.md",
	"GET /api/v1/models",
	"POST /api/v1/score",
	"DELETE /api/v1/studies/{id}",
	"GET /healthz",
	"GET /readyz",
	"GET /metrics",
	"GET /api/v1/openapi.json",
	"GET /",
}

// TestOpenAPIMatchesRouter walks the chi router and the served OpenAPI
// document and checks that they hold the same operations, that each
// operation declares exactly its path's parameters, that every $ref
// resolves, and that the contract's routes are all there.
func TestOpenAPIMatchesRouter(t *testing.T) {
	ts := newTestServer(t, Config{})
	var registered []string
	err := chi.Walk(ts.handler.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		// A subtree route is registered as "<prefix>/*" and documented as
		// "<prefix>/".
		registered = append(registered, method+" "+strings.TrimSuffix(route, "*"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, b := ts.do(t, "GET", "/api/v1/openapi.json", nil, "")
	if resp.StatusCode != 200 {
		t.Fatalf("openapi.json: %d", resp.StatusCode)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.0.3" {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	var documented []string
	braces := regexp.MustCompile(`\{([a-z]+)\}`)
	for path, item := range doc.Paths {
		for method, raw := range item {
			documented = append(documented, strings.ToUpper(method)+" "+path)
			var op struct {
				OperationID string `json:"operationId"`
				Parameters  []struct {
					Name, In string
					Required bool
				} `json:"parameters"`
				Responses map[string]json.RawMessage `json:"responses"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatal(err)
			}
			var want, got []string
			for _, m := range braces.FindAllStringSubmatch(path, -1) {
				want = append(want, m[1])
			}
			for _, p := range op.Parameters {
				if p.In == "path" {
					if !p.Required {
						t.Errorf("%s %s: path parameter %s not required", method, path, p.Name)
					}
					got = append(got, p.Name)
				}
			}
			if strings.Join(want, ",") != strings.Join(got, ",") {
				t.Errorf("%s %s: path parameters %v, want %v", method, path, got, want)
			}
			if op.OperationID == "" || len(op.Responses) == 0 {
				t.Errorf("%s %s: no operationId or responses", method, path)
			}
		}
	}
	sort.Strings(registered)
	sort.Strings(documented)
	if strings.Join(registered, "\n") != strings.Join(documented, "\n") {
		t.Fatalf("router and document differ:\nrouter:\n%s\n\ndocument:\n%s", strings.Join(registered, "\n"), strings.Join(documented, "\n"))
	}
	have := map[string]bool{}
	for _, r := range registered {
		have[r] = true
	}
	for _, r := range contractRoutes {
		if !have[r] {
			t.Errorf("contract route %s is not served", r)
		}
	}
	// Every $ref names a schema of the document.
	var full struct {
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	json.Unmarshal(b, &full)
	for _, m := range regexp.MustCompile(`"\$ref":\s*"#/components/schemas/([A-Za-z]+)"`).FindAllStringSubmatch(string(b), -1) {
		if _, ok := full.Components.Schemas[m[1]]; !ok {
			t.Errorf("$ref to missing schema %s", m[1])
		}
	}
}

// TestUIMount checks GET / with and without a UI handler, and that paths
// under /api/ never reach the UI.
func TestUIMount(t *testing.T) {
	ts := newTestServer(t, Config{})
	resp, b := ts.do(t, "GET", "/", nil, "")
	if resp.StatusCode != 200 || !strings.Contains(string(b), Caveat) {
		t.Fatalf("placeholder UI: %d %s", resp.StatusCode, b)
	}
	if resp, b := ts.do(t, "HEAD", "/", nil, ""); resp.StatusCode != 200 || len(b) != 0 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("HEAD /: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("UI " + r.URL.Path)) })
	ts = newTestServer(t, Config{UI: ui})
	for _, p := range []string{"/", "/js/main.js"} {
		if resp, b := ts.do(t, "GET", p, nil, ""); resp.StatusCode != 200 || string(b) != "UI "+p {
			t.Fatalf("GET %s: %d %s", p, resp.StatusCode, b)
		}
	}
	if resp, b := ts.do(t, "GET", "/api/v2/anything", nil, ""); resp.StatusCode != 404 || errorOf(t, b).Code != "not_found" {
		t.Fatalf("unknown API path: %d %s", resp.StatusCode, b)
	}
}
