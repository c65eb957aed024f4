// Package tenant resolves and validates tenant IDs. A tenant ID ends up in file paths and
// object-storage keys, so it is validated before anything else touches it.
package tenant

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Default is the tenant every request belongs to when multi-tenancy is off.
const Default = "anonymous"

// MaxLength is the longest tenant ID accepted, in bytes.
const MaxLength = 150

// Header names carrying the tenant. X-Scope-OrgID is the Cortex/Mimir/Tempo/Loki convention;
// THANOS-TENANT is what Thanos Receive clients send.
const (
	OrgIDHeader  = "X-Scope-OrgID"
	ThanosHeader = "THANOS-TENANT"
)

// ErrMissing is returned when multi-tenancy is on and a request names no tenant.
var ErrMissing = errors.New("no tenant: set the X-Scope-OrgID (or THANOS-TENANT) header; multi-tenancy is enabled")

// Validate reports why id cannot be used as a tenant ID, or nil.
func Validate(id string) error {
	switch {
	case id == "":
		return errors.New("tenant ID is empty")
	case len(id) > MaxLength:
		return fmt.Errorf("tenant ID is %d bytes long, the limit is %d", len(id), MaxLength)
	case id == "." || id == "..":
		return fmt.Errorf("tenant ID %q is not allowed", id)
	case strings.Contains(id, "/"):
		return fmt.Errorf("tenant ID %q contains '/'", id)
	case strings.Contains(id, ".."):
		return fmt.Errorf("tenant ID %q contains '..'", id)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("tenant ID %q contains control character 0x%02x", id, c)
		}
	}
	return nil
}

// FromHTTP returns the tenant of r. With multi-tenancy off every request belongs to
// Default, whatever headers it carries, so a single-tenant setup never splits data by
// accident. With it on, a missing tenant is ErrMissing (callers answer 401) and an invalid
// one is a validation error (callers answer 400).
func FromHTTP(r *http.Request, multiTenant bool) (string, error) {
	if !multiTenant {
		return Default, nil
	}
	id := r.Header.Get(OrgIDHeader)
	if id == "" {
		id = r.Header.Get(ThanosHeader)
	}
	if id == "" {
		return "", ErrMissing
	}
	if err := Validate(id); err != nil {
		return "", err
	}
	return id, nil
}
