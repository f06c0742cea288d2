// Who a client connection is: the pod behind it, as the Kubernetes API
// describes it (--pods kubernetes). Found by the netns cookie the kernel
// recorded for a redirected connect, else by the peer address, never from
// anything the client sends. Published as one immutable table; a
// connection keeps the identity it was accepted with.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

namespace metanode::core {

struct PeerIdentity {
  std::string pod;        // namespace/name
  std::string workload;   // Istio's source_workload: the Deployment, ... (kube::workload_name)
  std::string namespace_;
  std::string principal;  // spiffe://TRUST_DOMAIN/ns/NS/sa/SA
  std::string app, version;  // "" when the pod has no such label
  std::string canonical_service, canonical_revision;  // kube::canonical_*
  std::string cluster;  // Istio's cluster id (CLUSTER_ID)
};

struct PeerTable {
  std::unordered_map<uint64_t, std::shared_ptr<const PeerIdentity>> by_netns;
  std::unordered_map<uint32_t, std::shared_ptr<const PeerIdentity>> by_ipv4;  // host order

  // `netns` 0: not known (no interception).
  std::shared_ptr<const PeerIdentity> find(uint64_t netns, uint32_t ipv4) const {
    if (netns)
      if (auto it = by_netns.find(netns); it != by_netns.end()) return it->second;
    auto it = by_ipv4.find(ipv4);
    return it == by_ipv4.end() ? nullptr : it->second;
  }
};

}  // namespace metanode::core
