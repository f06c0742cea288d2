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
  bool skmsg_upstream = false;     // also daemon<->upstream when the upstream is a local pod
  std::chrono::nanoseconds liveness = std::chrono::seconds(1);
};

struct Counter {
  std::string name;
  uint64_t value = 0;
};

// A socket in mn_sock_hash, as its own end sees the connection.
struct SocketEntry {
  net::Endpoint local, remote;
  uint64_t netns = 0;  // only for loopback tuples
};

enum PodFlags : uint32_t { kPodManaged = 1, kPodOptOut = 2 };

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
  // One checked map read on an fd already held: fails (EPERM) when the
  // calling thread lacks what this kernel wants for any bpf() call.
  virtual Result<void> check_access() = 0;

  // Pods (network namespace cookies) and their policy; netns 0 in
  // exclude_port means every pod.
  virtual Result<void> set_pod(uint64_t netns, uint32_t flags) = 0;
  virtual Result<void> remove_pod(uint64_t netns) = 0;
  virtual Result<std::map<uint64_t, uint32_t>> pods() = 0;
  virtual Result<void> exclude_port(uint64_t netns, uint16_t port, bool excluded) = 0;
  virtual Result<std::vector<std::pair<uint64_t, uint16_t>>> excluded_ports() = 0;
  // Live entries, for inspection and for the map-size tests.
  virtual Result<std::vector<SocketEntry>> sockets() = 0;
  virtual Result<size_t> pending_tuples() = 0;
};

// The cookie of the network namespace at `netns_path` (e.g. /run/netns/X or
// /proc/PID/ns/net), as bpf_get_netns_cookie() reports it.
Result<uint64_t> netns_cookie(const std::string& netns_path);
// The same, with the IPv4 addresses the namespace's interfaces hold (host
// order; loopback left out): how a pod from the Kubernetes API, known by
// its IP, is matched to its sandbox's namespace.
struct NetnsInfo {
  uint64_t cookie = 0;
  std::vector<uint32_t> ipv4;
};
Result<NetnsInfo> netns_info(const std::string& netns_path);

// Makes mn_services hold exactly `wanted` (id = position + 1), touching only
// the differences so live entries never blink.
Result<void> sync_services(Maps& maps, const std::vector<net::Endpoint>& wanted);

struct InstallOptions {
  std::string cgroup_path;  // cgroup v2 directory the programs attach to
  std::string pin_dir;      // default MN_PIN_DIR_DEFAULT
  bool skmsg = true;
  bool getpeername = true;
  bool getsockopt = true;  // SO_ORIGINAL_DST answers
};

// What this kernel supports, probed before loading.
struct Features {
  bool cgroup_sock_addr = false, sock_ops = false, sk_storage = false;  // required
  bool sk_msg = false;       // sockhash + sk_msg: the socket-to-socket path
  bool sockopt = false;      // cgroup getsockopt: SO_ORIGINAL_DST
  bool netns_cookie = false; // bpf_get_netns_cookie in sock_addr programs: required
  bool denied = false;       // a probe was refused (EPERM): capabilities, not the kernel
  std::string missing_required() const;
};
Features probe_features();

// What install_kernel actually set up (features may have forced fallbacks).
struct Installed {
  std::unique_ptr<class Maps> maps;
  bool skmsg = false;
  bool getsockopt = false;
  std::string notes;  // human-readable fallbacks taken
};

// Loads, pins and attaches the programs, or adopts an existing pinned
// install (maps reused, pinned links switched to the new programs in place,
// so interception never pauses across a daemon restart).
Result<Installed> install_kernel(const InstallOptions& opts);

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
  Result<void> check_access() override { return Ok(); }
  Result<void> set_pod(uint64_t netns, uint32_t flags) override;
  Result<void> remove_pod(uint64_t netns) override;
  Result<std::map<uint64_t, uint32_t>> pods() override;
  Result<void> exclude_port(uint64_t netns, uint16_t port, bool excluded) override;
  Result<std::vector<std::pair<uint64_t, uint16_t>>> excluded_ports() override;
  Result<std::vector<SocketEntry>> sockets() override { return std::vector<SocketEntry>{}; }
  Result<size_t> pending_tuples() override { return size_t(0); }

  void set_orig_dst_for_test(int fd, OrigDst d) { orig_[fd] = d; }
  int writes() const { return writes_; }

 private:
  int writes_ = 0;
  std::map<net::Endpoint, uint32_t> services_;
  std::map<int, OrigDst> orig_;
  std::map<uint64_t, uint32_t> pods_;
  std::vector<std::pair<uint64_t, uint16_t>> excl_;
};

}  // namespace metanode::bpf
