package storeapi

import (
	"context"
	"testing"

	"github.com/grafana/dskit/user"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestTenantFromContext(t *testing.T) {
	in := func(kv ...string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...))
	}
	for name, tc := range map[string]struct {
		ctx  context.Context
		def  string
		want string
	}{
		"org id wins":          {ctx: user.InjectOrgID(in(ThanosTenantHeader, "b"), "a"), want: "a"},
		"thanos header":        {ctx: in(ThanosTenantHeader, "b"), want: "b"},
		"x-scope-orgid header": {ctx: in("x-scope-orgid", "c"), want: "c"},
		"default":              {ctx: context.Background(), def: "anonymous", want: "anonymous"},
	} {
		got, err := TenantFromContext(tc.ctx, tc.def)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", name, got, err, tc.want)
		}
	}
	if _, err := TenantFromContext(context.Background(), ""); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no tenant: got %v, want Unauthenticated", err)
	}
}

func TestEncodingRoundTrip(t *testing.T) {
	for _, e := range []storepb.Chunk_Encoding{storepb.Chunk_XOR, storepb.Chunk_HISTOGRAM, storepb.Chunk_FLOAT_HISTOGRAM} {
		enc, err := EncodingFromPB(e)
		if err != nil {
			t.Fatal(err)
		}
		back, err := encodingToPB(enc)
		if err != nil || back != e {
			t.Errorf("%s: round trip gave %s, %v", e, back, err)
		}
	}
	if _, err := EncodingFromPB(storepb.Chunk_Encoding(42)); err == nil {
		t.Error("unknown encoding accepted")
	}
}
