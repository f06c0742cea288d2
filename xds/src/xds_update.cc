#include "metanode/xds/xds_update.h"

#include <set>

namespace metanode::xds {
namespace {

template <class T>
Result<void> take(std::vector<T>& into, const Update& u) {
  std::map<std::string, T> by;
  if (!u.replace)
    for (auto& m : into) by.emplace(resource_name(m), std::move(m));
  for (const auto& n : u.removed) by.erase(n);
  for (size_t i = 0; i < u.resources.size(); ++i) {
    const auto& a = *u.resources[i];
    T m;
    if (a.type_url() != u.type_url || !a.UnpackTo(&m))
      return Error::invalid("resource[" + std::to_string(i) + "] of type '" + a.type_url() +
                            "' does not decode as " + short_type(u.type_url));
    by[resource_name(m)] = std::move(m);
  }
  into.clear();
  for (auto& [n, m] : by) into.push_back(std::move(m));
  return Ok();
}

}  // namespace

Update update_of(const envoy::service::discovery::v3::DiscoveryResponse& r) {
  Update u;
  u.type_url = r.type_url();
  u.version = r.version_info();
  u.nonce = r.nonce();
  u.replace = r.type_url() == kListenerType || r.type_url() == kClusterType;
  for (const auto& a : r.resources()) u.resources.push_back(&a);
  return u;
}

Update update_of(const envoy::service::discovery::v3::DeltaDiscoveryResponse& r) {
  Update u;
  u.type_url = r.type_url();
  u.version = r.system_version_info();
  u.nonce = r.nonce();
  for (const auto& res : r.resources()) {
    if (!res.has_resource()) continue;  // a name without a body says nothing
    u.resources.push_back(&res.resource());
    u.versions[res.name()] = res.version();
  }
  u.removed.assign(r.removed_resources().begin(), r.removed_resources().end());
  return u;
}

// Decodes into a copy of the one type's list, so a failure leaves `state`
// as it was without copying the other types.
template <class T>
Result<void> take_into(std::vector<T>& list, const Update& u) {
  std::vector<T> next = list;
  if (auto r = take(next, u); !r) return r;
  list = std::move(next);
  return Ok();
}

Result<void> merge_update(const Update& u, Resources& state) {
  const std::string& type = u.type_url;
  Result<void> ok = type == kListenerType   ? take_into(state.listeners, u)
                    : type == kClusterType  ? take_into(state.clusters, u)
                    : type == kEndpointType ? take_into(state.endpoints, u)
                    : type == kRouteType    ? take_into(state.routes, u)
                                            : Result<void>(Error::invalid("unknown type '" + type + "'"));
  if (!ok) return ok;
  state.version = u.version;
  return Ok();
}

Result<void> merge_response(const envoy::service::discovery::v3::DiscoveryResponse& r, Resources& state) {
  return merge_update(update_of(r), state);
}

}  // namespace metanode::xds
