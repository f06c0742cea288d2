// The daemon's view of the kernel side. The daemon programs against `Maps`;
// `KernelMaps` talks to the real pinned maps, `FakeMaps` keeps everything in
// memory so control logic is tested without a kernel or root.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "metanode/net.h"
#include "metanode/result.h"

namespace metanode::bpf {

struct OrigDst {
  net::Endpoint dst;       // where the pod was connecting (the VIP:port)
  uint64_t pod_netns = 0;  // netns cookie of the pod
  bool from_tuple = false;  // recovered through the userspace tuple fallback
};

struct RuntimeConfig {
  net::Endpoint redirect;          // where pods reach the daemon
  bool manage_all_netns = true;    // every non-host netns is a pod (standalone default)
  bool manage_host_netns = false;  // also intercept the host netns (tests/demo on one host)
  bool skmsg = true;               // socket-to-socket payload path
  std::chrono::nanoseconds liveness = std::chrono::seconds(1);
};

struct Counter {
  std::string name;
  uint64_t value = 0;
};

class Maps {
 public:
  virtual ~Maps() = default;
  // Writes mn_config and marks the daemon alive (heartbeat now).
  virtual Result<void> configure(const RuntimeConfig& cfg) = 0;
  // Refreshes the liveness timestamp; call well within cfg.liveness.
  virtual Result<void> heartbeat() = 0;
  // Stops redirection at once (clean shutdown) without unpinning anything.
  virtual Result<void> disable() = 0;
  virtual Result<void> upsert_service(net::Endpoint vip, uint32_t listener_id) = 0;
  virtual Result<void> remove_service(net::Endpoint vip) = 0;
  virtual Result<std::map<net::Endpoint, uint32_t>> services() = 0;
  // Original destination of a connection the daemon accepted on `fd`.
  virtual Result<OrigDst> original_dst(int fd) = 0;
  virtual Result<std::vector<Counter>> counters() = 0;
};

// Makes mn_services hold exactly `wanted` (id = position + 1), touching only
// the differences so live entries never blink.
Result<void> sync_services(Maps& maps, const std::vector<net::Endpoint>& wanted);

struct InstallOptions {
  std::string cgroup_path;  // cgroup v2 directory the programs attach to
  std::string pin_dir;      // default MN_PIN_DIR_DEFAULT
  bool skmsg = true;
  bool getpeername = true;
};

// Loads, pins and attaches the programs, or adopts an existing pinned
// install (maps reused, pinned links switched to the new programs in place,
// so interception never pauses across a daemon restart).
Result<std::unique_ptr<Maps>> install_kernel(const InstallOptions& opts);

// Removes every pin under `pin_dir` (links first: that detaches the
// programs) and the directory itself. Safe to call when nothing is there.
Result<void> uninstall_kernel(const std::string& pin_dir);

// Opens an existing pinned install read/write without loading programs
// (metanodectl, tests).
Result<std::unique_ptr<Maps>> open_pinned(const std::string& pin_dir);

// In-memory implementation for unit tests.
class FakeMaps final : public Maps {
 public:
  Result<void> configure(const RuntimeConfig& cfg) override;
  Result<void> heartbeat() override;
  Result<void> disable() override;
  Result<void> upsert_service(net::Endpoint vip, uint32_t listener_id) override;
  Result<void> remove_service(net::Endpoint vip) override;
  Result<std::map<net::Endpoint, uint32_t>> services() override;
  Result<OrigDst> original_dst(int fd) override;
  Result<std::vector<Counter>> counters() override;

  void set_orig_dst_for_test(int fd, OrigDst d) { orig_[fd] = d; }
  const RuntimeConfig& config() const { return cfg_; }
  bool enabled() const { return enabled_; }
  int heartbeats() const { return heartbeats_; }
  int writes() const { return writes_; }

 private:
  RuntimeConfig cfg_;
  bool enabled_ = false;
  int heartbeats_ = 0;
  int writes_ = 0;
  std::map<net::Endpoint, uint32_t> services_;
  std::map<int, OrigDst> orig_;
};

}  // namespace metanode::bpf
