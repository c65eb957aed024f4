// Package logutil bridges Vigil's slog loggers to the go-kit loggers that dskit and objstore
// expect, and builds the process logger from flags.
package logutil

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	gokitlog "github.com/go-kit/log"
)

// Config selects the process log format and level, named like Prometheus' flags.
type Config struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// RegisterFlags registers the logging flags.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.Level, "log.level", "info", "Only log messages with the given severity or above. One of: [debug, info, warn, error]")
	f.StringVar(&c.Format, "log.format", "logfmt", "Output format of log messages. One of: [logfmt, json]")
}

// New builds a logger writing to w.
func New(cfg Config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch cfg.Format {
	case "logfmt", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log.format: unknown format %q, want logfmt or json", cfg.Format)
	}
}

// GoKit adapts l to the go-kit Logger interface. A "level" key set by go-kit's level
// package becomes the slog level, so dskit's debug chatter stays filterable.
func GoKit(l *slog.Logger) gokitlog.Logger {
	return gokitAdapter{l: l}
}

type gokitAdapter struct{ l *slog.Logger }

func (a gokitAdapter) Log(keyvals ...interface{}) error {
	level := slog.LevelInfo
	msg := ""
	attrs := make([]slog.Attr, 0, len(keyvals)/2)
	for i := 0; i < len(keyvals); i += 2 {
		key := fmt.Sprint(keyvals[i])
		var val interface{} = "(MISSING)"
		if i+1 < len(keyvals) {
			val = keyvals[i+1]
		}
		switch key {
		case "level":
			switch strings.ToLower(fmt.Sprint(val)) {
			case "debug":
				level = slog.LevelDebug
			case "warn":
				level = slog.LevelWarn
			case "error":
				level = slog.LevelError
			}
			continue
		case "msg":
			msg = fmt.Sprint(val)
			continue
		}
		attrs = append(attrs, slog.Any(key, val))
	}
	a.l.LogAttrs(context.Background(), level, msg, attrs...)
	return nil
}
