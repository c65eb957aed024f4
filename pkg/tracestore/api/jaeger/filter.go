package jaeger

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/vigil-obs/vigil/pkg/tracestore/api/internal/httpx"
)

// The api_v3 structured filter (jaeger.expression.v1) is a large language;
// Vigil evaluates the part its Reader can: a conjunction of attribute
// equalities and presence tests on one span. /api/v3/capabilities says so,
// and anything else is refused with 400 rather than silently ignored.
type expression struct {
	Attr   *attributeReference `json:"attr"`
	Field  json.RawMessage     `json:"field"`
	Nested json.RawMessage     `json:"nested"`
	Scalar *scalar             `json:"scalar"`
	List   json.RawMessage     `json:"list"`
	Call   *call               `json:"call"`
}

type attributeReference struct {
	Key   string `json:"key"`
	Level string `json:"level"`
}

type scalar struct {
	Value string `json:"value"`
	Type  string `json:"type"`
}

type call struct {
	Op   string       `json:"op"`
	Args []expression `json:"args"`
}

// filterOperators are the jaeger.expression.v1 operators Vigil evaluates.
func filterOperators() []string { return []string{"and", "eq", "exists"} }

// ParseFilter turns a query.filter Call into attribute conditions.
func ParseFilter(s string) (map[string]string, error) {
	var c call
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		return nil, fmt.Errorf("query.filter is not a JSON Call expression: %v", err)
	}
	out := map[string]string{}
	if err := addFilter(&c, out, 0); err != nil {
		return nil, err
	}
	return out, nil
}

func attrKey(e expression) (string, error) {
	if e.Attr == nil || e.Attr.Key == "" {
		return "", fmt.Errorf("query.filter: expected an attribute reference with a key")
	}
	if e.Attr.Level != "" {
		return "", fmt.Errorf("query.filter: attribute level %q is not supported; use an unqualified reference", e.Attr.Level)
	}
	return e.Attr.Key, nil
}

func set(out map[string]string, k, v string) error {
	if old, ok := out[k]; ok && old != v {
		return fmt.Errorf("query.filter: conflicting conditions on %q", k)
	}
	out[k] = v
	return nil
}

func addFilter(c *call, out map[string]string, depth int) error {
	if depth > 16 {
		return fmt.Errorf("query.filter nests too deeply")
	}
	switch c.Op {
	case "and":
		if len(c.Args) < 2 {
			return fmt.Errorf("query.filter: 'and' takes two or more predicates")
		}
		for _, a := range c.Args {
			if a.Call == nil {
				return fmt.Errorf("query.filter: 'and' takes predicates (calls)")
			}
			if err := addFilter(a.Call, out, depth+1); err != nil {
				return err
			}
		}
		return nil
	case "eq":
		if len(c.Args) != 2 {
			return fmt.Errorf("query.filter: 'eq' takes two values")
		}
		ref, val := c.Args[0], c.Args[1]
		if ref.Attr == nil {
			ref, val = val, ref
		}
		k, err := attrKey(ref)
		if err != nil {
			return err
		}
		if val.Scalar == nil {
			return fmt.Errorf("query.filter: 'eq' compares an attribute with a constant")
		}
		return set(out, k, val.Scalar.Value)
	case "exists":
		if len(c.Args) != 1 {
			return fmt.Errorf("query.filter: 'exists' takes one reference")
		}
		k, err := attrKey(c.Args[0])
		if err != nil {
			return err
		}
		if _, ok := out[k]; ok {
			return nil // an equality already implies presence
		}
		out[k] = ""
		return nil
	}
	return fmt.Errorf("query.filter: operator %q is not supported (supported: and, eq, exists)", c.Op)
}

type filterCapabilities struct {
	Levels    []string `json:"levels"`
	Operators []string `json:"operators"`
}

type searchCapabilities struct {
	WithoutServiceName  bool               `json:"withoutServiceName"`
	SameSpanConjunction bool               `json:"sameSpanConjunction"`
	Filter              filterCapabilities `json:"filter"`
	Paginated           bool               `json:"paginated"`
}

// capabilities answers /api/v3/capabilities.
func (a *API) capabilities(w http.ResponseWriter, _ *http.Request) {
	httpx.WriteJSON(w, http.StatusOK, map[string]searchCapabilities{"search": {
		WithoutServiceName:  true, // the Reader searches by attributes, duration or time alone
		SameSpanConjunction: true, // the Reader matches all attributes on one span
		Filter:              filterCapabilities{Levels: []string{}, Operators: filterOperators()},
	}})
}
