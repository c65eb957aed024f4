package tracestore

import (
	"flag"
	"testing"
)

func TestFlagsRegisterTogetherAndDefaultsAreValid(t *testing.T) {
	fs := flag.NewFlagSet("vigil", flag.ContinueOnError)
	var ic IngesterConfig
	var qc QuerierConfig
	var cc CompactorConfig
	// Duplicate flag names would panic here.
	ic.RegisterFlags(fs)
	qc.RegisterFlags(fs)
	cc.RegisterFlags(fs)
	if err := fs.Parse([]string{"-traces.retention=48h", "-traces.max-block-bytes=1048576"}); err != nil {
		t.Fatal(err)
	}
	if err := ic.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := cc.Validate(); err != nil {
		t.Fatal(err)
	}
	if cc.Retention.Hours() != 48 || ic.MaxBlockBytes != 1<<20 {
		t.Fatalf("flags not applied: %+v %+v", cc, ic)
	}
	if qc.BlockSyncInterval >= ic.RetainFlushed {
		t.Fatal("queriers must notice a new block before the ingester forgets it")
	}
	if cc.DeletionDelay <= qc.BlockSyncInterval {
		t.Fatal("queriers must notice deletion marks before blocks disappear")
	}
	bad := ic
	bad.MaxBlockBytes = 0
	if err := bad.Validate(); err == nil {
		t.Fatal("zero max block bytes accepted")
	}
}
