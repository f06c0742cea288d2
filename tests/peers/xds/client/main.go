// A real, independent xDS client for metanode-xds's integration tests: it
// speaks ADS (state of the world) and Aeraki's RDS service with
// go-control-plane's generated Envoy types, and decodes every resource with
// them — the MetaProtocolProxy filter config into Aeraki's own Go type, with
// unknown fields refused and Aeraki's validation rules applied. That proves
// metanode's .proto files and JSON keys are field-compatible.
//
//	xds-client -server HOST:PORT -node ID [-nack TYPE] [-updates N] [-timeout 10s]
//	xds-client -config-dump FILE
//
// Prints one line per response: "RESPONSE <stream> <type> <version> <names,...>",
// "SYNCED" once all four types have arrived, and exits 0 after N more
// responses (or 1 on any decode error or on the timeout).
//
// With -config-dump it decodes FILE (metanoded's /config_dump) strictly as
// Envoy's envoy.admin.v3.ConfigDump, every resource in it with the real
// types, prints "CONFIGDUMP clusters=N endpoints=N listeners=N routes=N"
// and exits 0 (1 on any error).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	mpp "github.com/aeraki-mesh/meta-protocol-control-plane-api/aeraki/meta_protocol_proxy/v1alpha"
	udpa "github.com/cncf/xds/go/udpa/type/v1"
	admin "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

type stream interface {
	Send(*discovery.DiscoveryRequest) error
	Recv() (*discovery.DiscoveryResponse, error)
}

func fail(format string, args ...any) {
	fmt.Printf("ERROR "+format+"\n", args...)
	os.Exit(1)
}

// decode checks one resource with the real types and returns its name, and
// for a listener the route configuration its MetaProtocolProxy names.
func decode(a *anypb.Any) (name, rds string) {
	m, err := a.UnmarshalNew()
	if err != nil {
		fail("%s: %v", a.TypeUrl, err)
	}
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			fail("%s: envoy validation: %v", a.TypeUrl, err)
		}
	}
	switch r := m.(type) {
	case *cluster.Cluster:
		return r.GetName(), ""
	case *endpoint.ClusterLoadAssignment:
		return r.GetClusterName(), ""
	case *route.RouteConfiguration:
		return r.GetName(), ""
	case *listener.Listener:
		for _, fc := range r.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				if f.GetName() != "envoy.filters.network.meta_protocol_proxy" {
					continue
				}
				ts := &udpa.TypedStruct{}
				if err := f.GetTypedConfig().UnmarshalTo(ts); err != nil {
					fail("listener %s: filter config is not a udpa TypedStruct: %v", r.GetName(), err)
				}
				if ts.GetTypeUrl() != "type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy" {
					fail("listener %s: TypedStruct type_url %s", r.GetName(), ts.GetTypeUrl())
				}
				js, _ := protojson.Marshal(ts.GetValue())
				cfg := &mpp.MetaProtocolProxy{}
				if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, cfg); err != nil {
					fail("listener %s: MetaProtocolProxy: %v", r.GetName(), err)
				}
				if err := cfg.ValidateAll(); err != nil {
					fail("listener %s: Aeraki validation: %v", r.GetName(), err)
				}
				return r.GetName(), cfg.GetRds().GetRouteConfigName()
			}
		}
		return r.GetName(), ""
	}
	fail("unexpected type %s", a.TypeUrl)
	return "", ""
}

// configDump decodes an Envoy ConfigDump and each resource in it.
func configDump(path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	var cd admin.ConfigDump
	if err := protojson.Unmarshal(data, &cd); err != nil {
		fail("config dump: %v", err)
	}
	n := map[string]int{}
	for _, c := range cd.Configs {
		m, err := c.UnmarshalNew()
		if err != nil {
			fail("%s: %v", c.TypeUrl, err)
		}
		// An entry may carry Envoy's error_state (its newest version was
		// refused) and, if it never had a good version, nothing else.
		entry := func(kind string, res *anypb.Any, es *admin.UpdateFailureState) {
			name := "-"
			if res != nil {
				name, _ = decode(res)
				n[kind]++
			} else if es == nil {
				fail("%s entry with neither a resource nor an error_state", kind)
			}
			if es != nil {
				if es.LastUpdateAttempt == nil || es.Details == "" {
					fail("%s %s: error_state without details or last_update_attempt", kind, name)
				}
				fmt.Printf("ERRORSTATE %s %s: %s\n", kind, name, es.Details)
			}
		}
		switch d := m.(type) {
		case *admin.ClustersConfigDump:
			for _, e := range d.DynamicActiveClusters {
				entry("clusters", e.Cluster, e.ErrorState)
			}
		case *admin.EndpointsConfigDump:
			for _, e := range d.DynamicEndpointConfigs {
				entry("endpoints", e.EndpointConfig, e.ErrorState)
			}
		case *admin.ListenersConfigDump:
			for _, e := range d.DynamicListeners {
				if e.Name == "" || (e.ActiveState == nil && e.ErrorState == nil) {
					fail("listener entry without name, or with neither active_state nor error_state")
				}
				if e.ActiveState != nil {
					if name, _ := decode(e.ActiveState.Listener); name != e.Name {
						fail("listener %q dumped as %q", name, e.Name)
					}
					n["listeners"]++
				}
				if e.ErrorState != nil {
					entry("listeners", nil, e.ErrorState)
				}
			}
		case *admin.RoutesConfigDump:
			for _, e := range d.DynamicRouteConfigs {
				entry("routes", e.RouteConfig, e.ErrorState)
			}
		default:
			fail("unexpected config %s", c.TypeUrl)
		}
	}
	fmt.Printf("CONFIGDUMP clusters=%d endpoints=%d listeners=%d routes=%d\n", n["clusters"], n["endpoints"],
		n["listeners"], n["routes"])
}

func main() {
	server := flag.String("server", "127.0.0.1:15010", "metanode-xds address")
	dump := flag.String("config-dump", "", "decode this Envoy ConfigDump file and exit")
	nodeID := flag.String("node", "xds-client~0.0.0.0~probe.default~default.svc.cluster.local", "node id")
	nackType := flag.String("nack", "", "NACK the first response of this type URL")
	updates := flag.Int("updates", 0, "responses to wait for after SYNCED")
	timeout := flag.Duration("timeout", 10*time.Second, "give up after")
	flag.Parse()
	if *dump != "" {
		configDump(*dump)
		return
	}

	conn, err := grpc.NewClient(*server, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	node := &core.Node{Id: *nodeID}
	ads, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		fail("%v", err)
	}
	type resp struct {
		name string
		r    *discovery.DiscoveryResponse
		err  error
	}
	ch := make(chan resp)
	recv := func(name string, s stream) {
		for {
			r, err := s.Recv()
			ch <- resp{name, r, err}
			if err != nil {
				return
			}
		}
	}
	go recv("ads", ads)
	_ = ads.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType})

	var rds stream
	// Every SotW request names the whole subscription, ACKs included.
	subs := map[string][]string{}
	seen := map[string]bool{}
	nacked := false
	synced := false
	after := 0
	for {
		var x resp
		select {
		case x = <-ch:
		case <-ctx.Done():
			fail("timeout (seen %v)", seen)
		}
		if x.err != nil {
			fail("stream %s: %v", x.name, x.err)
		}
		r := x.r
		var names, routes []string
		for _, a := range r.GetResources() {
			if a.GetTypeUrl() != r.GetTypeUrl() {
				fail("resource of type %s in a %s response", a.GetTypeUrl(), r.GetTypeUrl())
			}
			n, rn := decode(a)
			names = append(names, n)
			if rn != "" {
				routes = append(routes, rn)
			}
		}
		sort.Strings(names)
		fmt.Printf("RESPONSE %s %s %s %s\n", x.name, r.GetTypeUrl(), r.GetVersionInfo(), strings.Join(names, ","))
		ack := &discovery.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(),
			ResponseNonce: r.GetNonce(), ResourceNames: subs[r.GetTypeUrl()]}
		if r.GetTypeUrl() == *nackType && !nacked {
			nacked = true
			ack.VersionInfo = ""
			ack.ErrorDetail = &status.Status{Code: 3, Message: "xds-client: NACK on request"}
		}
		var next []*discovery.DiscoveryRequest
		switch r.GetTypeUrl() {
		case resourcev3.ClusterType:
			var eds []string
			for _, a := range r.GetResources() {
				c := &cluster.Cluster{}
				_ = a.UnmarshalTo(c)
				if c.GetType() == cluster.Cluster_EDS {
					n := c.GetEdsClusterConfig().GetServiceName()
					if n == "" {
						n = c.GetName()
					}
					eds = append(eds, n)
				}
			}
			if !seen[resourcev3.ClusterType] {
				subs[resourcev3.EndpointType] = eds
				next = append(next, &discovery.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: eds})
			}
		case resourcev3.EndpointType:
			if !seen[resourcev3.EndpointType] {
				next = append(next, &discovery.DiscoveryRequest{TypeUrl: resourcev3.ListenerType})
			}
		case resourcev3.ListenerType:
			if rds == nil {
				s, err := routeservice.NewRouteDiscoveryServiceClient(conn).StreamRoutes(ctx)
				if err != nil {
					fail("%v", err)
				}
				rds = s
				subs[resourcev3.RouteType] = routes
				go recv("rds", s)
				_ = s.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resourcev3.RouteType, ResourceNames: routes})
			}
		}
		if x.name == "rds" {
			_ = rds.Send(ack)
		} else {
			_ = ads.Send(ack)
		}
		for _, q := range next {
			_ = ads.Send(q)
		}
		if synced {
			after++
		}
		seen[r.GetTypeUrl()] = true
		if !synced && len(seen) == 4 {
			synced = true
			fmt.Println("SYNCED")
		}
		if synced && after >= *updates {
			fmt.Println("DONE")
			return
		}
	}
}
