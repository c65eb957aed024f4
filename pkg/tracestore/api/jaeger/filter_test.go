package jaeger

import (
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigil-obs/vigil/pkg/tracestore/api/internal/apitest"
)

func TestParseFilter(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]string
		err  string
	}{
		{`{"op":"eq","args":[{"attr":{"key":"http.status_code"}},{"scalar":{"value":"500"}}]}`, map[string]string{"http.status_code": "500"}, ""},
		{`{"op":"eq","args":[{"scalar":{"value":"card"}},{"attr":{"key":"payment.method"}}]}`, map[string]string{"payment.method": "card"}, ""},
		{`{"op":"and","args":[{"call":{"op":"eq","args":[{"attr":{"key":"a"}},{"scalar":{"value":"1"}}]}},{"call":{"op":"exists","args":[{"attr":{"key":"b"}}]}}]}`, map[string]string{"a": "1", "b": ""}, ""},
		{`{"op":"or","args":[]}`, nil, `operator "or" is not supported`},
		{`{"op":"eq","args":[{"attr":{"key":"a","level":"resource"}},{"scalar":{"value":"1"}}]}`, nil, "level"},
		{`{"op":"eq","args":[{"attr":{"key":"a"}},{"attr":{"key":"b"}}]}`, nil, "constant"},
		{`{"op":"and","args":[{"call":{"op":"eq","args":[{"attr":{"key":"a"}},{"scalar":{"value":"1"}}]}},{"call":{"op":"eq","args":[{"attr":{"key":"a"}},{"scalar":{"value":"2"}}]}}]}`, nil, "conflicting"},
		{`{"op":"and","args":[{"scalar":{"value":"1"}},{"scalar":{"value":"2"}}]}`, nil, "predicates"},
		{`not json`, nil, "not a JSON Call"},
	} {
		got, err := ParseFilter(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v %v, want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestV3FilterAndCapabilities(t *testing.T) {
	srv, reader := setup(t, false)
	code, body := get(t, srv.URL+"/jaeger/api/v3/capabilities")
	want := `{"search":{"withoutServiceName":true,"sameSpanConjunction":true,"filter":{"levels":[],"operators":["and","eq","exists"]},"paginated":false}}`
	if code != http.StatusOK || string(body) != want {
		t.Errorf("capabilities: %d %s", code, body)
	}
	q := url.Values{
		"query.startTimeMin": {t0.Add(-time.Minute).Format(time.RFC3339Nano)},
		"query.startTimeMax": {t0.Add(time.Hour).Format(time.RFC3339Nano)},
		"query.filter":       {`{"op":"eq","args":[{"attr":{"key":"payment.method"}},{"scalar":{"value":"card"}}]}`},
	}
	code, body = get(t, srv.URL+"/jaeger/api/v3/traces?"+q.Encode())
	if code != http.StatusOK || !strings.Contains(string(body), apitest.TraceA().String()) || reader.LastSearch.Attributes["payment.method"] != "card" {
		t.Errorf("filter search: %d %s %+v", code, body, reader.LastSearch)
	}
	q.Set("query.filter", `{"op":"regex","args":[]}`)
	code, body = get(t, srv.URL+"/jaeger/api/v3/traces?"+q.Encode())
	if code != http.StatusBadRequest || !strings.Contains(string(body), `operator \"regex\" is not supported`) {
		t.Errorf("unsupported operator: %d %s", code, body)
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{
		`{"op":"eq","args":[{"attr":{"key":"k"}},{"scalar":{"value":"v"}}]}`,
		`{"op":"and","args":[{"call":{"op":"exists","args":[{"attr":{"key":"k"}}]}},{"call":{"op":"eq","args":[{"attr":{"key":"j"}},{"scalar":{"value":"1"}}]}}]}`,
		`{"op":"and","args":[{"call":{"op":"and","args":[]}}]}`,
		`{}`, `[]`, `null`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseFilter(s)
		if err == nil {
			for k := range m {
				if k == "" {
					t.Fatalf("%q produced an empty key", s)
				}
			}
		}
	})
}
