// libFuzzer target: what an xDS server can send. Bytes -> DiscoveryResponse
// -> merged into a state of the world (the tutorial's, held as the client
// holds it: with digests, so resent resources keep their objects) ->
// compiled against the snapshot of that state (so reuse of unchanged
// compiled objects is exercised too). Any input must end in an error,
// rejects or a snapshot, never a crash or hang.
#include <cstddef>
#include <cstdint>
#include <string>

#include "envoy/service/discovery/v3/discovery.pb.h"
#include "metanode/xds/k8s_config.h"
#include "metanode/xds/snapshot.h"
#include "metanode/xds/xds_update.h"

namespace {
const char* kTypes[] = {metanode::xds::kClusterType, metanode::xds::kEndpointType,
                        metanode::xds::kListenerType, metanode::xds::kRouteType};

struct Base {
  metanode::xds::Resources resources;
  metanode::xds::Digests digests;
  std::shared_ptr<const metanode::xds::Snapshot> snapshot;
};

const metanode::xds::Resources& manifests() {
  static const metanode::xds::Resources r = [] {
    auto t = metanode::xds::translate_manifests({{"svc.yaml", R"(
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: s, namespace: ns}
spec:
  hosts: [s.ns.svc.cluster.local]
  addresses: [10.96.0.10]
  ports: [{number: 9090, name: tcp-metaprotocol-thrift-x}]
  endpoints: [{address: 10.1.0.11, labels: {version: v1}}]
)"}});
    return t ? std::move(t.value()) : metanode::xds::Resources{};
  }();
  return r;
}

// The manifests' resources as a client holds them after receiving them.
const Base& base() {
  static const Base b = [] {
    Base out;
    auto receive = [&](const char* type, const auto& list) {
      envoy::service::discovery::v3::DiscoveryResponse r;
      r.set_type_url(type);
      for (const auto& m : list) r.add_resources()->PackFrom(*m);
      (void)metanode::xds::merge_update(metanode::xds::update_of(r), out.resources, &out.digests);
    };
    const auto& m = manifests();
    receive(metanode::xds::kClusterType, m.clusters);
    receive(metanode::xds::kEndpointType, m.endpoints);
    receive(metanode::xds::kListenerType, m.listeners);
    receive(metanode::xds::kRouteType, m.routes);
    out.snapshot = metanode::xds::compile_snapshot(out.resources).snapshot;
    return out;
  }();
  return b;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 256 * 1024) return 0;
  // The first byte picks the type when the input names none, so mutations
  // of a resource's bytes reach that type's compiler; its top bit picks the
  // delta form.
  const char* type = kTypes[data[0] % 4];
  metanode::xds::Resources state = base().resources;
  metanode::xds::Digests digests = base().digests;
  const metanode::xds::Snapshot* previous = base().snapshot.get();
  if (data[0] & 0x80) {
    envoy::service::discovery::v3::DeltaDiscoveryResponse r;
    if (!r.ParseFromArray(data + 1, int(size - 1))) return 0;
    if (r.type_url().empty()) r.set_type_url(type);
    for (auto& res : *r.mutable_resources())
      if (res.resource().type_url().empty()) res.mutable_resource()->set_type_url(r.type_url());
    if (metanode::xds::merge_update(metanode::xds::update_of(r), state, &digests))
      (void)metanode::xds::compile_snapshot(std::move(state), previous);
    return 0;
  }
  envoy::service::discovery::v3::DiscoveryResponse r;
  if (!r.ParseFromArray(data + 1, int(size - 1))) return 0;
  if (r.type_url().empty()) r.set_type_url(type);
  for (auto& a : *r.mutable_resources())
    if (a.type_url().empty()) a.set_type_url(r.type_url());
  if (metanode::xds::merge_update(metanode::xds::update_of(r), state, &digests))
    (void)metanode::xds::compile_snapshot(std::move(state), previous);
  return 0;
}
