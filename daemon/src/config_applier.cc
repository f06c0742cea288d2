#include "metanode/core/config_applier.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

namespace metanode::core {
namespace {

// Adds to `into` the live version of each rejected resource, by type and
// name: a refused update keeps what was working.
void restore_rejected(xds::Resources& into, const xds::Resources& live,
                      const std::vector<xds::Reject>& rejects) {
  auto restore = [&](const char* type, auto& list, const auto& from) {
    for (const auto& r : rejects) {
      if (r.type_url != type) continue;
      for (const auto& m : from)
        if (xds::resource_name(*m) == r.name) list.push_back(m);
    }
  };
  restore(xds::kListenerType, into.listeners, live.listeners);
  restore(xds::kClusterType, into.clusters, live.clusters);
  restore(xds::kEndpointType, into.endpoints, live.endpoints);
  restore(xds::kRouteType, into.routes, live.routes);
}

}  // namespace

std::vector<net::Endpoint> serving_addresses(const xds::Snapshot& s) {
  std::vector<net::Endpoint> v;
  for (const auto& l : s.listeners)
    if (l.routes) v.push_back(l.address);
  std::sort(v.begin(), v.end());
  return v;
}

Result<void> ConfigApplier::sync_vips(const std::vector<net::Endpoint>& want) {
  if (!maps_) return Ok();
  if (auto r = bpf::sync_services(*maps_, want); !r) return r;
  vips_ = want;
  return Ok();
}

xds::Applied ConfigApplier::apply(xds::Resources res, const std::string& origin, bool partial) {
  std::lock_guard<std::mutex> l(mu_);
  auto live = server_.snapshot();
  std::string version = res.version;
  // Compiled against what is live: only what changed is compiled again.
  auto c = xds::compile_snapshot(std::move(res), live.get());
  for (const auto& r : c.rejects) spdlog::error("configuration from {}: refused {}", origin, r.str());
  if (!c.rejects.empty()) {
    if (!partial) {
      server_.control_stats().inc(Counter::config_reload_rejected);
      spdlog::error("configuration from {} refused whole; version {} stays", origin,
                    live ? live->version : "(none)");
      return {live, std::move(c.rejects), false};
    }
    if (live) {
      // Compile again with the rejected resources at their live versions.
      xds::Resources again = c.snapshot->resources;
      again.version = version;
      restore_rejected(again, live->resources, c.rejects);
      auto c2 = xds::compile_snapshot(std::move(again), c.snapshot.get());
      c2.snapshot->refused = c.rejects;  // what the source's versions were refused for
      c.snapshot = std::move(c2.snapshot);
      c.compiled += c2.compiled;  // the restored resources (the rest was reused)
    }
  }
  auto next = serving_addresses(*c.snapshot);
  std::vector<net::Endpoint> keep;
  std::set_intersection(vips_.begin(), vips_.end(), next.begin(), next.end(), std::back_inserter(keep));
  if (auto r = sync_vips(keep); !r) spdlog::error("mn_services: {}", r.error().message());
  auto bound = server_.publish(c.snapshot);
  if (!bound) {
    bind_error_ = bound.error().message();
    spdlog::error("configuration {} from {}: {}", version, origin, bind_error_);
  } else {
    bind_error_.clear();
  }
  if (auto r = sync_vips(next); !r) spdlog::error("mn_services: {}", r.error().message());
  server_.control_stats().inc(Counter::config_reload_ok);
  spdlog::info("configuration {} from {} applied: {} listeners, {} clusters, {} route tables ({} compiled, "
               "{} unchanged){}",
               version, origin, c.snapshot->listeners.size(), c.snapshot->clusters.size(),
               c.snapshot->routes.size(), c.compiled, c.reused,
               c.rejects.empty() ? "" : ", " + std::to_string(c.rejects.size()) + " refused");
  return {c.snapshot, std::move(c.rejects), true, c.compiled, c.reused};
}

void ConfigApplier::refused(const std::string& origin, const Error& why) {
  server_.control_stats().inc(Counter::config_reload_rejected);
  auto live = server_.snapshot();
  spdlog::error("configuration change from {} rejected, keeping version {}: {}", origin,
                live ? live->version : "(none)", why.message());
}

std::string ConfigApplier::bind_error() const {
  std::lock_guard<std::mutex> l(mu_);
  return bind_error_;
}

}  // namespace metanode::core
