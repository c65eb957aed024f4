package tenant

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"team-a", true},
		{"Team_A.prod", true},
		{strings.Repeat("a", MaxLength), true},
		{strings.Repeat("a", MaxLength+1), false},
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"a..b", false},
		{"a\nb", false},
		{"a\x7fb", false},
	} {
		err := Validate(tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("Validate(%q) = %v, want ok=%v", tc.id, err, tc.ok)
		}
	}
}

func TestFromHTTP(t *testing.T) {
	r := httptest.NewRequest("POST", "/api/v1/push", nil)
	r.Header.Set(OrgIDHeader, "team-a")
	if id, err := FromHTTP(r, false); err != nil || id != Default {
		t.Fatalf("multi-tenancy off: got %q, %v; want %q", id, err, Default)
	}
	if id, err := FromHTTP(r, true); err != nil || id != "team-a" {
		t.Fatalf("X-Scope-OrgID: got %q, %v", id, err)
	}

	r = httptest.NewRequest("POST", "/api/v1/push", nil)
	r.Header.Set(ThanosHeader, "team-b")
	if id, err := FromHTTP(r, true); err != nil || id != "team-b" {
		t.Fatalf("THANOS-TENANT: got %q, %v", id, err)
	}

	r = httptest.NewRequest("POST", "/api/v1/push", nil)
	if _, err := FromHTTP(r, true); !errors.Is(err, ErrMissing) {
		t.Fatalf("missing tenant: got %v, want ErrMissing", err)
	}

	r.Header.Set(OrgIDHeader, "../etc")
	if _, err := FromHTTP(r, true); err == nil {
		t.Fatal("path traversal tenant accepted")
	}
}
