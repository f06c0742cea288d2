#include "metanode/xds/xds_update.h"

#include <set>
#include <string_view>

namespace metanode::xds {
namespace {

template <class T>
Result<void> take(std::vector<Shared<T>>& into, const Update& u, Digests* digests) {
  // What is held now, by name and by the digest of the bytes it came as.
  std::unordered_map<const void*, uint64_t> none, next_digests;
  auto& held_digests = digests ? digests->by_type[u.type_url] : none;
  std::unordered_map<uint64_t, const Shared<T>*> by_digest;
  std::map<std::string, Shared<T>> by;
  for (auto& m : into) {
    if (auto d = held_digests.find(m.get()); d != held_digests.end()) by_digest.emplace(d->second, &m);
    if (!u.replace) by.emplace(resource_name(*m), m);
  }
  for (const auto& n : u.removed) by.erase(n);
  for (size_t i = 0; i < u.resources.size(); ++i) {
    const auto& a = *u.resources[i];
    auto undecodable = [&] {
      return Error::invalid("resource[" + std::to_string(i) + "] of type '" + a.type_url() +
                            "' does not decode as " + short_type(u.type_url));
    };
    if (a.type_url() != u.type_url) return undecodable();
    uint64_t d = digest_of(a.value());
    Shared<T> m;
    if (auto same = by_digest.find(d); same != by_digest.end()) {
      m = *same->second;
    } else {
      T fresh;
      if (!fresh.ParseFromString(a.value())) return undecodable();
      m = share(std::move(fresh));
    }
    next_digests[m.get()] = d;
    by[resource_name(*m)] = std::move(m);
  }
  into.clear();
  for (auto& [n, m] : by) {
    if (auto d = held_digests.find(m.get()); d != held_digests.end()) next_digests.emplace(m.get(), d->second);
    into.push_back(std::move(m));
  }
  if (digests) held_digests = std::move(next_digests);
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

uint64_t digest_of(const std::string& bytes) {
  return std::hash<std::string_view>{}(bytes) ^ (uint64_t(bytes.size()) * 0x9e3779b97f4a7c15ull);
}

// Decodes into a copy of the one type's list (pointers), so a failure
// leaves `state` as it was.
template <class T>
Result<void> take_into(std::vector<Shared<T>>& list, const Update& u, Digests* digests) {
  std::vector<Shared<T>> next = list;
  if (auto r = take(next, u, digests); !r) return r;
  list = std::move(next);
  return Ok();
}

Result<void> merge_update(const Update& u, Resources& state, Digests* digests) {
  const std::string& type = u.type_url;
  Result<void> ok = type == kListenerType   ? take_into(state.listeners, u, digests)
                    : type == kClusterType  ? take_into(state.clusters, u, digests)
                    : type == kEndpointType ? take_into(state.endpoints, u, digests)
                    : type == kRouteType    ? take_into(state.routes, u, digests)
                                            : Result<void>(Error::invalid("unknown type '" + type + "'"));
  if (!ok) return ok;
  state.version = u.version;
  return Ok();
}

Result<void> merge_response(const envoy::service::discovery::v3::DiscoveryResponse& r, Resources& state) {
  return merge_update(update_of(r), state);
}

}  // namespace metanode::xds
