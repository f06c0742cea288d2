// A one-machine "node with pods" for root integration tests and the demo:
// a node network namespace with a bridge, pod namespaces joined to it by
// veth pairs (10.x addresses that exist only inside these namespaces), and
// a test-made cgroup v2 subtree (daemon/ and pods/) to attach programs to.
// Everything it creates carries its tag and is removed on destruction, and
// leftovers of killed runs are swept on the next start.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "metanode/result.h"

namespace metanode::testbed {

bool is_root();

// A field of /proc/PID/status ("CapEff", "NoNewPrivs", "Seccomp"), or "".
std::string proc_status(pid_t pid, const std::string& key);
// A capability set field of it (CapEff, CapPrm, CapBnd) as a bit mask.
uint64_t proc_caps(pid_t pid, const std::string& key);
// VmRSS in KiB (-1 if gone), open fds, and user + system CPU seconds of a process.
long proc_rss_kib(pid_t pid);
int proc_fds(pid_t pid);
double proc_cpu_seconds(pid_t pid);

// Runs argv to completion; returns exit status and captured stdout.
struct RunResult {
  int status = -1;
  std::string out;
};
RunResult run(const std::vector<std::string>& argv, const std::string& netns = "");

// HTTP GET of `path` from inside `netns` (empty: the caller's namespace),
// e.g. the admin port, which lives in the node namespace. Body, or nullopt.
std::optional<std::string> http_get(const std::string& netns, const std::string& host_port,
                                    const std::string& path, int* status = nullptr);
// Any method, with a JSON body (bodies with Content-Length only, no chunks).
std::optional<std::string> http_request(const std::string& netns, const std::string& host_port,
                                        const std::string& method, const std::string& path,
                                        const std::string& body, int* status = nullptr);

// Removes namespaces, cgroups and pin directories of earlier runs whose
// owning process is gone.
void sweep_stale();

// Child processes that die with their owner: killed (TERM, then KILL) on
// destruction. Usable without root when no netns/cgroup is given.
class ProcessGroup {
 public:
  ProcessGroup() = default;
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;
  ~ProcessGroup() { kill_all(); }

  // Starts argv in `netns` (and `cgroup` if non-empty), stdout+stderr to `log`.
  Result<pid_t> spawn(const std::vector<std::string>& argv, const std::string& netns,
                      const std::string& cgroup, const std::string& log);
  // Waits for `pid` to exit; returns its exit status, 128+signal, or -1 on timeout.
  int wait(pid_t pid, int timeout_ms);
  void kill_all();

 private:
  std::vector<pid_t> pids_;
};

class Testbed {
 public:
  // `subnet` is the first two octets for the bridge network ("10.77").
  static Result<std::unique_ptr<Testbed>> create(const std::string& purpose,
                                                 const std::string& subnet = "10.77");
  ~Testbed();

  const std::string& tag() const { return tag_; }
  std::string node_ns() const { return ns_path(tag_ + "-node"); }
  std::string node_ip() const { return subnet_ + ".0.1"; }
  const std::string& cgroup() const { return cgroup_; }  // attach point
  std::string daemon_cgroup() const { return cgroup_ + "/daemon"; }
  std::string pods_cgroup() const { return cgroup_ + "/pods"; }
  std::string pin_dir() const { return "/sys/fs/bpf/" + tag_; }

  // A pod: its own netns with eth0 = subnet.0.<host>, default route via the
  // node. Returns the netns path.
  Result<std::string> add_pod(const std::string& name, int host);
  std::string pod_ip(int host) const { return subnet_ + ".0." + std::to_string(host); }

  // Processes started here are killed when the testbed goes away.
  Result<pid_t> spawn(const std::vector<std::string>& argv, const std::string& netns,
                      const std::string& cgroup, const std::string& log) {
    return procs_.spawn(argv, netns, cgroup, log);
  }
  int wait(pid_t pid, int timeout_ms) { return procs_.wait(pid, timeout_ms); }
  // Runs argv to completion in `netns` and `cgroup`; its output, or status -1
  // on timeout (the process is then killed).
  RunResult exec(const std::vector<std::string>& argv, const std::string& netns,
                 const std::string& cgroup, int timeout_ms = 30000);


  // Interface byte counters read from /proc/net/dev inside `netns`.
  struct IfStats {
    uint64_t rx_bytes = 0, tx_bytes = 0, rx_packets = 0, tx_packets = 0;
  };
  std::optional<IfStats> if_stats(const std::string& netns, const std::string& ifname);

  std::string work_dir() const { return work_dir_; }

  static std::string ns_path(const std::string& name) { return "/run/netns/" + name; }

 private:
  Testbed() = default;
  Result<void> setup();

  std::string purpose_;
  std::string tag_;
  std::string subnet_;
  std::string cgroup_;
  std::string work_dir_;
  std::vector<std::string> namespaces_;
  int pods_ = 0;
  ProcessGroup procs_;
};

}  // namespace metanode::testbed
