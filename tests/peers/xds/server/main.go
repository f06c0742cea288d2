// A real, independent xDS server for metanoded's integration tests:
// go-control-plane's snapshot cache and server (the library Aeraki's own RDS
// server is built on), serving ADS and the plain RDS service on one port.
//
//	xds-server -listen 127.0.0.1:0 -resources FILE
//
// FILE is a JSON array of google.protobuf.Any objects (protojson, "@type"
// naming the Envoy type). Prints "listening PORT". On SIGHUP it reads FILE
// again and serves it as the next version to every node, then prints
// "LOADED <version>". Prints "NODE <id>" for each new node, "ACK <type>
// <version>" and "NACK <type> <detail>" for each client answer.
//
// As istiod on 15012 and Aeraki's RDS port: -tls-cert/-tls-key serve TLS;
// -token requires "authorization: Bearer TOKEN" and -cluster-id a
// "clusterid" header on every stream; -client-ca requires a client
// certificate signed by that root (printing "CLIENT <URI SAN>").
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"crypto/tls"
	"crypto/x509"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"

	// Resource types the file may name.
	_ "github.com/cncf/xds/go/udpa/type/v1"
	_ "github.com/cncf/xds/go/xds/type/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

func load(path string) (map[resourcev3.Type][]types.Resource, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[resourcev3.Type][]types.Resource{}
	for i, r := range raw {
		a := &anypb.Any{}
		if err := protojson.Unmarshal(r, a); err != nil {
			return nil, fmt.Errorf("%s: resource %d: %w", path, i, err)
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("%s: resource %d: %w", path, i, err)
		}
		out[a.TypeUrl] = append(out[a.TypeUrl], m.(types.Resource))
	}
	return out, nil
}

type printer struct{ mu sync.Mutex }

func (p *printer) say(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Printf(format+"\n", args...)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "gRPC listen address")
	file := flag.String("resources", "", "initial resources (JSON array of Any)")
	ads := flag.Bool("ads", true, "ADS-consistent cache (istiod); false: as Aeraki's RDS server")
	tlsCert := flag.String("tls-cert", "", "serve TLS with this certificate (PEM)")
	tlsKey := flag.String("tls-key", "", "and this key (PEM)")
	clientCA := flag.String("client-ca", "", "require client certificates signed by this root (PEM)")
	token := flag.String("token", "", "require this bearer token")
	clusterID := flag.String("cluster-id", "", "require this clusterid header")
	flag.Parse()

	res, err := load(*file)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cache := cachev3.NewSnapshotCache(*ads, cachev3.IDHash{}, nil)
	var mu sync.Mutex
	version := 1
	nodes := map[string]bool{}
	current, err := cachev3.NewSnapshot("v1", res)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	out := &printer{}
	ctx := context.Background()
	seen := func(node *corev3.Node) {
		mu.Lock()
		defer mu.Unlock()
		if node != nil && !nodes[node.GetId()] {
			nodes[node.GetId()] = true
			_ = cache.SetSnapshot(ctx, node.GetId(), current)
			out.say("NODE %s", node.GetId())
		}
	}
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(id int64, req *discovery.DiscoveryRequest) error {
			seen(req.GetNode())
			if req.GetResponseNonce() == "" {
				return nil
			}
			if req.GetErrorDetail() != nil {
				out.say("NACK %s %s", req.GetTypeUrl(), strings.ReplaceAll(req.GetErrorDetail().GetMessage(), "\n", " "))
			} else {
				out.say("ACK %s %s", req.GetTypeUrl(), req.GetVersionInfo())
			}
			return nil
		},
		// Delta: the same, plus what each request subscribes to and the
		// versions a reconnecting client says it holds.
		StreamDeltaRequestFunc: func(id int64, req *discovery.DeltaDiscoveryRequest) error {
			seen(req.GetNode())
			if n := len(req.GetInitialResourceVersions()); n > 0 {
				out.say("DELTA-INITIAL %s %d", req.GetTypeUrl(), n)
			}
			if subs := req.GetResourceNamesSubscribe(); len(subs) > 0 {
				out.say("DELTA-SUBSCRIBE %s %s", req.GetTypeUrl(), strings.Join(subs, ","))
			}
			if req.GetResponseNonce() == "" {
				return nil
			}
			if req.GetErrorDetail() != nil {
				out.say("DELTA-NACK %s %s", req.GetTypeUrl(), strings.ReplaceAll(req.GetErrorDetail().GetMessage(), "\n", " "))
			} else {
				out.say("DELTA-ACK %s", req.GetTypeUrl())
			}
			return nil
		},
	}
	srv := serverv3.NewServer(ctx, cache, cb)
	var opts []grpc.ServerOption
	if *tlsCert != "" {
		pair, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{pair}}
		if *clientCA != "" {
			pem, err := os.ReadFile(*clientCA)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			cfg.ClientCAs = x509.NewCertPool()
			cfg.ClientCAs.AppendCertsFromPEM(pem)
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	opts = append(opts, grpc.StreamInterceptor(func(s any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		md, _ := metadata.FromIncomingContext(ss.Context())
		// What a client sent in the clear or not: tests check that no token
		// goes to a server reached without TLS.
		out.say("STREAM %s authorization headers %d", info.FullMethod, len(md.Get("authorization")))
		if *token != "" {
			if a := md.Get("authorization"); len(a) != 1 || a[0] != "Bearer "+*token {
				out.say("DENIED token %v", a)
				return status.Error(codes.Unauthenticated, "authentication failure")
			}
		}
		if *clusterID != "" {
			if c := md.Get("clusterid"); len(c) != 1 || c[0] != *clusterID {
				out.say("DENIED clusterid %v", c)
				return status.Error(codes.PermissionDenied, "wrong cluster")
			}
		}
		if p, ok := peer.FromContext(ss.Context()); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
				for _, u := range ti.State.PeerCertificates[0].URIs {
					out.say("CLIENT %s", u)
				}
			}
		}
		return h(s, ss)
	}))
	g := grpc.NewServer(opts...)
	discovery.RegisterAggregatedDiscoveryServiceServer(g, srv)
	routeservice.RegisterRouteDiscoveryServiceServer(g, srv)
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() { _ = g.Serve(lis) }()
	out.say("listening %d", lis.Addr().(*net.TCPAddr).Port)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	for range hup {
		r, err := load(*file)
		if err != nil {
			out.say("ERROR %v", err)
			continue
		}
		mu.Lock()
		version++
		v := "v" + strconv.Itoa(version)
		snap, err := cachev3.NewSnapshot(v, r)
		if err == nil {
			current = snap
			for n := range nodes {
				_ = cache.SetSnapshot(ctx, n, snap)
			}
		}
		mu.Unlock()
		if err != nil {
			out.say("ERROR %v", err)
			continue
		}
		out.say("LOADED %s", v)
	}
}
