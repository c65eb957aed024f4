package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/grafana/dskit/flagext"
	"gopkg.in/yaml.v3"
)

// loadConfig builds the effective configuration the way Prometheus and Mimir users expect:
// flag defaults, then the YAML file named by -config.file, then flags given on the command
// line, which win over the file.
func loadConfig(args []string, stderr io.Writer) (*Config, error) {
	cfg := &Config{}
	fs := flag.NewFlagSet("vigil", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.RegisterFlags(fs)

	// A first parse only to learn -config.file; errors surface in the second parse.
	probe := flag.NewFlagSet("probe", flag.ContinueOnError)
	probe.SetOutput(io.Discard)
	configFile := probe.String("config.file", "", "")
	probe.Bool("print.config", false, "")
	_ = probe.Parse(filterFlags(args, "config.file"))

	if *configFile != "" {
		if err := loadYAML(*configFile, cfg); err != nil {
			return nil, err
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	cfg.applyDerivedDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// filterFlags keeps only the named flag (and its value) so the probe parse cannot fail on
// flags it does not know.
func filterFlags(args []string, name string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		if a == name && i+1 < len(args) {
			out = append(out, "-"+name, args[i+1])
			i++
		} else if strings.HasPrefix(a, name+"=") {
			out = append(out, "-"+a)
		}
	}
	return out
}

// loadYAML decodes path strictly: an unknown key is an error that names it, so a typo never
// silently falls back to a default.
func loadYAML(path string, cfg *Config) error {
	buf, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config.file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(buf))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config.file %s: %w", path, withKeyPaths(buf, err))
	}
	return nil
}

// withKeyPaths names the key in yaml.v3's decoding errors, which give only a line
// ("line 2: cannot unmarshal !!str `abc` into int"): each becomes
// "line 2 (ingester.wal_segment_size): cannot unmarshal ...".
func withKeyPaths(buf []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	var root yaml.Node
	if yaml.Unmarshal(buf, &root) != nil {
		return err
	}
	// keys: line of a key (or of its scalar value) -> dotted path. containers: first
	// line of a mapping or sequence value -> the path of its key, for errors about the
	// value as a whole ("cannot unmarshal !!map into ...").
	keys, containers := map[int]string{}, map[int]string{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				if c.Kind == yaml.ScalarNode {
					keys[c.Line] = p
				}
				walk(c, p)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				keys[k.Line] = p
				if v.Kind == yaml.ScalarNode {
					keys[v.Line] = p
				} else {
					containers[v.Line] = p
				}
				walk(v, p)
			}
		}
	}
	walk(&root, "")
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = m
		var line int
		if _, serr := fmt.Sscanf(m, "line %d:", &line); serr != nil {
			continue
		}
		key, ok := keys[line]
		if c, isContainer := containers[line]; isContainer && (strings.Contains(m, "!!map") || strings.Contains(m, "!!seq")) {
			key, ok = c, true
		}
		if ok {
			msgs[i] = strings.Replace(m, fmt.Sprintf("line %d:", line), fmt.Sprintf("line %d (%s):", line, key), 1)
		}
	}
	return errors.New("yaml: " + strings.Join(msgs, "; "))
}

// yamlString renders the effective configuration; secrets print masked (flagext.Secret).
func (c *Config) yamlString() (string, error) {
	out, err := yaml.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("render config: %w", err)
	}
	return string(out), nil
}

// applyDerivedDefaults fills values that default relative to other settings, so that
// -data-dir and -server.grpc-listen-port alone place and connect everything. A component
// setting still at its registered default follows the global one; an explicit value wins.
func (c *Config) applyDerivedDefaults() {
	if c.Storage.Filesystem.Dir == "" {
		c.Storage.Filesystem.Dir = filepath.Join(c.DataDir, "bucket")
	}
	if c.Ingester.DataDir == "./data" {
		c.Ingester.DataDir = c.DataDir
	}
	if c.Traces.Ingester.DataDir == "./data" {
		c.Traces.Ingester.DataDir = c.DataDir
	}
	if c.StoreGateway.DataDir == "./data/store-gateway" {
		c.StoreGateway.DataDir = filepath.Join(c.DataDir, "store-gateway")
	}
	if c.Compactor.DataDir == "./data/compactor" {
		c.Compactor.DataDir = filepath.Join(c.DataDir, "compactor")
	}
	// Peers gossip to the advertised port; unless it was set, it is the one we bind.
	if c.MemberlistKV.AdvertisePort == 7946 && c.MemberlistKV.TCPTransport.BindPort != 7946 {
		c.MemberlistKV.AdvertisePort = c.MemberlistKV.TCPTransport.BindPort
	}
	if c.Ingester.Ring.InstancePort == 9095 {
		c.Ingester.Ring.InstancePort = c.Server.GRPCListenPort
	}
	// In one process the querier reaches the store-gateway on its own gRPC port.
	if len(c.Querier.StoreGatewayAddresses) == 0 && (slices.Contains(c.Target, All) || slices.Contains(c.Target, StoreGateway)) {
		host := c.Server.GRPCListenAddress
		if host == "" || host == "0.0.0.0" {
			host = "127.0.0.1"
		}
		c.Querier.StoreGatewayAddresses = []string{net.JoinHostPort(host, strconv.Itoa(c.Server.GRPCListenPort))}
	}
}

// setFlagDefault changes a flag registered by a library to Vigil's default, keeping -help
// truthful.
func setFlagDefault(f *flag.FlagSet, name, value string) {
	fl := f.Lookup(name)
	if fl == nil {
		panic("setFlagDefault: no flag " + name)
	}
	if err := fl.Value.Set(value); err != nil {
		panic(fmt.Sprintf("setFlagDefault %s=%s: %v", name, value, err))
	}
	fl.DefValue = value
}

var _ flag.Value = (*flagext.StringSliceCSV)(nil)
