// Package grpcutil holds gRPC plumbing shared by several components.
package grpcutil

import (
	"context"
	"strings"

	"google.golang.org/grpc"
)

// RenamingRegistrar registers services under other names. Vigil runs several components
// that serve the same protocol (the Thanos StoreAPI from ingesters, store-gateways and the
// querier) on one gRPC server in single-binary mode; internal copies get internal names so
// the public name stays free for Thanos clients.
type RenamingRegistrar struct {
	Registrar grpc.ServiceRegistrar
	Renames   map[string]string // old service name → new
}

// RegisterService implements grpc.ServiceRegistrar.
func (r RenamingRegistrar) RegisterService(desc *grpc.ServiceDesc, impl any) {
	if to, ok := r.Renames[desc.ServiceName]; ok {
		renamed := *desc
		renamed.ServiceName = to
		desc = &renamed
	}
	r.Registrar.RegisterService(desc, impl)
}

// RenamingConn sends calls of generated clients to renamed services: the client side of
// RenamingRegistrar.
type RenamingConn struct {
	Conn    grpc.ClientConnInterface
	Renames map[string]string // old service name → new
}

func (c RenamingConn) method(m string) string {
	// Full method names look like "/pkg.Service/Method".
	if i := strings.LastIndexByte(m, '/'); i > 0 {
		if to, ok := c.Renames[m[1:i]]; ok {
			return "/" + to + m[i:]
		}
	}
	return m
}

// Invoke implements grpc.ClientConnInterface.
func (c RenamingConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return c.Conn.Invoke(ctx, c.method(method), args, reply, opts...)
}

// NewStream implements grpc.ClientConnInterface.
func (c RenamingConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return c.Conn.NewStream(ctx, desc, c.method(method), opts...)
}
