// One xDS response as the client applies it, whichever protocol variant
// carried it: state of the world (DiscoveryResponse) or delta
// (DeltaDiscoveryResponse).
#pragma once

#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "envoy/service/discovery/v3/discovery.pb.h"
#include "metanode/result.h"
#include "metanode/xds/resources.h"

namespace metanode::xds {

struct Update {
  std::string type_url;
  std::string version;  // SotW version_info; delta system_version_info (for logs only)
  std::string nonce;
  // SotW Listener and Cluster responses are the type's whole set; every
  // other response updates the resources it carries.
  bool replace = false;
  std::vector<const google::protobuf::Any*> resources;  // into the response
  std::vector<std::string> removed;                     // delta
  std::map<std::string, std::string> versions;          // delta: name -> resource version
};

Update update_of(const envoy::service::discovery::v3::DiscoveryResponse& r);
Update update_of(const envoy::service::discovery::v3::DeltaDiscoveryResponse& r);

// Per type URL, the digest of the bytes each held resource arrived as, by
// the resource's address (held resources are alive, so an address names one
// object). A state-of-the-world server resends every Listener and Cluster
// on each change: a resource that arrives with the bytes of one already held
// keeps that object, is not decoded again, and the compiler reuses what it
// made of it. The digest is 64 bits of hash plus the length, as Envoy also
// trusts a hash of the bytes to skip unchanged resources.
struct Digests {
  std::map<std::string, std::unordered_map<const void*, uint64_t>> by_type;
};
uint64_t digest_of(const std::string& bytes);

// Applies `u` to `state`. A resource that does not decode as the update's
// type fails the whole update and leaves `state` as it was. With `digests`
// (kept beside `state` from one update to the next), resources that arrive
// unchanged keep their objects.
Result<void> merge_update(const Update& u, Resources& state, Digests* digests = nullptr);

// merge_update(update_of(r), state): the SotW form, for tests and fuzzing.
Result<void> merge_response(const envoy::service::discovery::v3::DiscoveryResponse& r, Resources& state);

}  // namespace metanode::xds
