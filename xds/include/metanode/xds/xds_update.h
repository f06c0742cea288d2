// One xDS response as the client applies it, whichever protocol variant
// carried it: state of the world (DiscoveryResponse) or delta
// (DeltaDiscoveryResponse).
#pragma once

#include <map>
#include <string>
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

// Applies `u` to `state`. A resource that does not decode as the update's
// type fails the whole update and leaves `state` as it was.
Result<void> merge_update(const Update& u, Resources& state);

// merge_update(update_of(r), state): the SotW form, for tests and fuzzing.
Result<void> merge_response(const envoy::service::discovery::v3::DiscoveryResponse& r, Resources& state);

}  // namespace metanode::xds
