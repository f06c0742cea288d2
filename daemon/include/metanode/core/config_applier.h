// The one place configuration becomes live, whichever source it came from:
// compile, publish to the workers, bind (--no-bpf), and keep the kernel's
// mn_services in step — a VIP is added only after the snapshot that serves
// it is live, and removed before the snapshot that drops it.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "metanode/bpf/maps.h"
#include "metanode/core/server.h"
#include "metanode/xds/config_source.h"

namespace metanode::core {

class ConfigApplier : public xds::ConfigSink {
 public:
  ConfigApplier(Server& server, bpf::Maps* maps) : server_(server), maps_(maps) {}
  xds::Applied apply(xds::Resources resources, const std::string& origin, bool partial) override;
  void refused(const std::string& origin, const Error& why) override;
  // The last listener bind failure (--no-bpf), empty if none.
  std::string bind_error() const;

 private:
  Result<void> sync_vips(const std::vector<net::Endpoint>& want);
  Server& server_;
  bpf::Maps* maps_;
  mutable std::mutex mu_;  // one apply at a time
  std::vector<net::Endpoint> vips_;  // in mn_services now
  std::string bind_error_;
};

// Listener addresses that can serve: the listener's routes have arrived.
// Only these go into mn_services (a pod redirected to a listener without
// routes would get "no route" for a service that works without us).
std::vector<net::Endpoint> serving_addresses(const xds::Snapshot& s);

}  // namespace metanode::core
