// Package client is the gRPC client and wire contract of the Vigil ingester: the
// vigil.ingester.Ingester Push service, a codec for gogo-generated messages, and a
// client that also speaks the Thanos Store, Exemplars, Metadata and Info APIs the
// ingester serves for recent data.
package client

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/grafana/dskit/middleware"
	ringclient "github.com/grafana/dskit/ring/client"
	"github.com/thanos-io/thanos/pkg/exemplars/exemplarspb"
	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/metadata/metadatapb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// Config configures connections to ingesters.
type Config struct {
	MaxRecvMsgSize int           `yaml:"grpc_max_recv_msg_size"`
	MaxSendMsgSize int           `yaml:"grpc_max_send_msg_size"`
	KeepaliveTime  time.Duration `yaml:"grpc_keepalive_time"`
	// InProcessPush lets Push call an ingester running in the same process directly
	// instead of over loopback gRPC (see local.go).
	InProcessPush bool `yaml:"in_process_push"`
	// InProcessReads lets Series read from an ingester running in the same process
	// directly instead of over loopback gRPC (see local.go).
	InProcessReads bool `yaml:"in_process_reads"`
}

// RegisterFlags registers the flags under -ingester.client.
func (cfg *Config) RegisterFlags(f *flag.FlagSet) {
	cfg.RegisterFlagsWithPrefix("ingester.client.", f)
}

// RegisterFlagsWithPrefix registers the flags with a custom prefix (e.g. for a
// querier-specific client config).
func (cfg *Config) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	f.IntVar(&cfg.MaxRecvMsgSize, prefix+"grpc-max-recv-msg-size", 100<<20, "Maximum size in bytes of a gRPC message received from an ingester.")
	f.IntVar(&cfg.MaxSendMsgSize, prefix+"grpc-max-send-msg-size", 100<<20, "Maximum size in bytes of a gRPC message sent to an ingester.")
	f.DurationVar(&cfg.KeepaliveTime, prefix+"grpc-keepalive-time", 20*time.Second, "Interval of gRPC keepalive pings to ingesters; 0 disables them.")
	f.BoolVar(&cfg.InProcessPush, prefix+"in-process-push", true, "Push to an ingester that runs in the same process (-target=all) by a direct call instead of loopback gRPC; ingesters in other processes are always reached over gRPC.")
	f.BoolVar(&cfg.InProcessReads, prefix+"in-process-reads", true, "Read series from an ingester that runs in the same process (-target=all) by a direct call instead of loopback gRPC; ingesters in other processes are always reached over gRPC.")
}

// Validate checks the configuration.
func (cfg *Config) Validate() error {
	if cfg.MaxRecvMsgSize <= 0 {
		return fmt.Errorf("ingester.client.grpc-max-recv-msg-size must be positive, got %d", cfg.MaxRecvMsgSize)
	}
	if cfg.MaxSendMsgSize <= 0 {
		return fmt.Errorf("ingester.client.grpc-max-send-msg-size must be positive, got %d", cfg.MaxSendMsgSize)
	}
	if cfg.KeepaliveTime > 0 && cfg.KeepaliveTime < MinKeepaliveTime {
		return fmt.Errorf("ingester.client.grpc-keepalive-time must be 0 or at least %v (servers refuse more frequent pings), got %v", MinKeepaliveTime, cfg.KeepaliveTime)
	}
	return nil
}

// DefaultConfig returns the flag defaults, handy for tests and embedding.
func DefaultConfig() Config {
	var cfg Config
	fs := flag.NewFlagSet("", flag.PanicOnError)
	cfg.RegisterFlags(fs)
	return cfg
}

// IngesterClient is everything a distributor or querier needs from one ingester.
type IngesterClient interface {
	PusherClient
	storepb.StoreClient
	exemplarspb.ExemplarsClient
	metadatapb.MetadataClient
	infopb.InfoClient
	// HealthClient lets the dskit ring client pool health-check ingesters.
	grpc_health_v1.HealthClient
	io.Closer
}

type ingesterClient struct {
	PusherClient
	storepb.StoreClient
	exemplarspb.ExemplarsClient
	metadatapb.MetadataClient
	infopb.InfoClient
	grpc_health_v1.HealthClient
	conn           *grpc.ClientConn
	addr           string
	inProcessPush  bool
	inProcessReads bool
}

func (c *ingesterClient) Close() error {
	return c.conn.Close()
}

// DialOptions returns the gRPC dial options New uses: Vigil's codec, message size
// limits, and dskit's user-header interceptors so the tenant in the context
// (user.InjectOrgID) travels to the ingester.
func DialOptions(cfg Config) []grpc.DialOption {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(Codec{}),
			grpc.MaxCallRecvMsgSize(cfg.MaxRecvMsgSize),
			grpc.MaxCallSendMsgSize(cfg.MaxSendMsgSize),
		),
		grpc.WithChainUnaryInterceptor(middleware.ClientUserHeaderInterceptor),
		grpc.WithChainStreamInterceptor(middleware.StreamClientUserHeaderInterceptor),
	}
	if cfg.KeepaliveTime > 0 {
		opts = append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                cfg.KeepaliveTime,
			Timeout:             cfg.KeepaliveTime,
			PermitWithoutStream: true,
		}))
	}
	return opts
}

// ServerOptions returns the gRPC server options that make a server decode gogo
// messages (prompb, storepb) with their generated methods. Servers without them still
// work (google.golang.org/protobuf falls back to the same methods through its legacy
// wrapper), only slower.
// It also accepts the keepalive pings DialOptions sends (idle connections
// included), which grpc-go's default policy answers with GOAWAY.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(Codec{}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: MinKeepaliveTime, PermitWithoutStream: true}),
	}
}

// MinKeepaliveTime is the shortest keepalive interval Vigil's gRPC servers
// accept from clients; -ingester.client.grpc-keepalive-time may not be
// shorter.
const MinKeepaliveTime = 10 * time.Second

// New returns a client for the ingester at addr ("host:port"). The connection is
// established lazily on first use.
func New(addr string, cfg Config) (IngesterClient, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, DialOptions(cfg)...)
	if err != nil {
		return nil, fmt.Errorf("dial ingester %s: %w", addr, err)
	}
	return &ingesterClient{
		PusherClient:    NewPusherClient(conn),
		StoreClient:     storepb.NewStoreClient(conn),
		ExemplarsClient: exemplarspb.NewExemplarsClient(conn),
		MetadataClient:  metadatapb.NewMetadataClient(conn),
		InfoClient:      infopb.NewInfoClient(conn),
		HealthClient:    grpc_health_v1.NewHealthClient(conn),
		conn:            conn,
		addr:            addr,
		inProcessPush:   cfg.InProcessPush,
		inProcessReads:  cfg.InProcessReads,
	}, nil
}

// NewPoolFactory returns a dskit ring client pool factory creating IngesterClients, for
// ringclient.NewPool. Clients returned by the pool can be type-asserted to
// IngesterClient.
func NewPoolFactory(cfg Config) ringclient.PoolFactory {
	return ringclient.PoolAddrFunc(func(addr string) (ringclient.PoolClient, error) {
		return New(addr, cfg)
	})
}
