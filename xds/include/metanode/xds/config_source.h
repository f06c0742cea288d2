// The one seam through which configuration reaches the data plane. A
// ConfigSource (a manifest directory, an xDS server over gRPC) hands complete
// states of the world to a ConfigSink (the daemon's applier), which compiles,
// publishes and reports back what it refused.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "metanode/result.h"
#include "metanode/xds/resources.h"
#include "metanode/xds/snapshot.h"

namespace metanode::xds {

struct Applied {
  std::shared_ptr<const Snapshot> snapshot;  // what is live now (null if nothing applied)
  std::vector<Reject> rejects;               // what was refused, by type and name
  bool published = false;                    // false: the whole update was refused
  // Clusters, route tables and listeners compiled, and taken unchanged from
  // the configuration before (snapshot.h: compile_snapshot).
  size_t compiled = 0, reused = 0;
};

class ConfigSink {
 public:
  virtual ~ConfigSink() = default;
  // A complete state of the world from `origin` (for logs). `partial`: apply
  // what compiles and keep each refused resource's last good version (xDS);
  // otherwise all or nothing (a manifest directory is one edit).
  // Thread-safe; the configuration is live when this returns.
  virtual Applied apply(Resources resources, const std::string& origin, bool partial) = 0;
  // An update refused before it became resources (manifests that do not
  // translate): counted and logged; the last good configuration stays.
  virtual void refused(const std::string& origin, const Error& why) = 0;
};

class ConfigSource {
 public:
  virtual ~ConfigSource() = default;
  // Begins delivering to `sink`. An error here is a start-up failure the
  // user must fix (bad manifests, bad flags); a server that is merely away
  // is not an error, the source retries.
  virtual Result<void> start(ConfigSink& sink) = 0;
  virtual void stop() = 0;
  // True once a complete first configuration was applied.
  virtual bool synced() const = 0;
  // One line for /ready when not synced: what it is waiting for.
  virtual std::string waiting_for() const = 0;
  // JSON object for /config_dump: per type version, last update, last NACK.
  virtual std::string status_json() const = 0;
  // Prometheus lines (metanode_xds_*).
  virtual std::string metrics_text() const = 0;
};

}  // namespace metanode::xds
