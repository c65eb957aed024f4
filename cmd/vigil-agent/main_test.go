package main

import (
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestRunFlags(t *testing.T) {
	if err := run([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if err := run([]string{"-log.level", "loud"}); err == nil || !strings.Contains(err.Error(), "-log.level") {
		t.Fatalf("bad log level: %v", err)
	}
	if err := run([]string{"-no-such-flag"}); err == nil {
		t.Fatal("unknown flag accepted")
	}
}
