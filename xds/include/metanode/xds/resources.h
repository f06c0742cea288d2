// A complete set of xDS resources (state of the world), as Envoy, Istio and
// Aeraki put them on the wire.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "envoy/config/cluster/v3/cluster.pb.h"
#include "envoy/config/endpoint/v3/endpoint.pb.h"
#include "envoy/config/listener/v3/listener.pb.h"
#include "envoy/config/route/v3/route.pb.h"

namespace metanode::xds {

inline constexpr char kListenerType[] = "type.googleapis.com/envoy.config.listener.v3.Listener";
inline constexpr char kClusterType[] = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
inline constexpr char kEndpointType[] =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
inline constexpr char kRouteType[] = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
inline constexpr char kMetaProtocolProxyType[] =
    "type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy";
// The network filter name Aeraki's EnvoyFilter patches into a listener.
inline constexpr char kMetaProtocolFilterName[] = "envoy.filters.network.meta_protocol_proxy";
// How istiod passes that filter's config: a TypedStruct (either name) whose
// type_url is kMetaProtocolProxyType and whose value is protojson.
inline constexpr char kUdpaTypedStructType[] = "type.googleapis.com/udpa.type.v1.TypedStruct";
inline constexpr char kXdsTypedStructType[] = "type.googleapis.com/xds.type.v3.TypedStruct";
// The gRPC cluster Aeraki's listeners name as their RDS config source.
inline constexpr char kAerakiXdsCluster[] = "aeraki-xds";

// A resource once made is never changed: every holder (the xDS client's
// state, the snapshot compiled from it, the server's published set) shares
// the one object. Copying a whole state copies pointers, and a resource that
// arrives again unchanged keeps its object, which is how the compiler knows
// it need not compile it again (snapshot.h).
template <class T>
using Shared = std::shared_ptr<const T>;

template <class T>
Shared<T> share(T m) {
  return std::make_shared<const T>(std::move(m));
}

struct Resources {
  std::string version;
  std::vector<Shared<envoy::config::listener::v3::Listener>> listeners;
  std::vector<Shared<envoy::config::cluster::v3::Cluster>> clusters;
  std::vector<Shared<envoy::config::endpoint::v3::ClusterLoadAssignment>> endpoints;
  std::vector<Shared<envoy::config::route::v3::RouteConfiguration>> routes;
};

// The name xDS knows each resource by (a ClusterLoadAssignment's is its
// cluster_name).
std::string resource_name(const envoy::config::listener::v3::Listener& m);
std::string resource_name(const envoy::config::cluster::v3::Cluster& m);
std::string resource_name(const envoy::config::endpoint::v3::ClusterLoadAssignment& m);
std::string resource_name(const envoy::config::route::v3::RouteConfiguration& m);

// One resource the compiler refused, and why: what a NACK names.
struct Reject {
  std::string type_url;
  std::string name;
  std::string reason;
  std::string str() const;  // "<short type> <name>: <reason>"
};

// "type.googleapis.com/envoy.config.listener.v3.Listener" -> "Listener".
std::string short_type(const std::string& type_url);

// The admin /config_dump body in Envoy's shape (envoy.admin.v3.ConfigDump):
// Clusters, Endpoints, Listeners and Routes config dumps, each resource an
// Any with its version and `last_updated` (RFC 3339), proto field names, so
// tools that read Envoy's dumps read ours. A resource in `refused` (the
// source's newest version of it did not compile; what is live is its last
// good one, if any) carries Envoy's `error_state` with the reason and
// `refused_at`; a refused resource with no live version is an entry with
// only its error_state.
std::string config_dump_json(const Resources& r, std::chrono::system_clock::time_point last_updated,
                             const std::vector<Reject>& refused = {},
                             std::chrono::system_clock::time_point refused_at = {});

}  // namespace metanode::xds
