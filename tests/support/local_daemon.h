// metanoded --no-bpf on loopback with real peers as child processes: the
// integration tier that needs no root. Free ports come from the kernel.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "testbed.h"
#include "thrift_sample.h"

namespace metanode::testbed {

// A TCP socket bound to 127.0.0.1 on an ephemeral port (in `port`), not
// yet listening; -1 on failure.
int bind_loopback(int& port);
int free_port();
std::string slurp(const std::string& path);
// The value of an unlabelled Prometheus sample, or ~0 when absent.
uint64_t metric(const std::string& text, const std::string& name);
// Polls `pred` every 20 ms until it holds or `limit` passes; its last value.
bool eventually(const std::function<bool()>& pred,
                std::chrono::milliseconds limit = std::chrono::seconds(10));
// Parses a peer's "SUMMARY {json}" line (client.py / cpp_peer / node consumers).
ClientSummary parse_summary(const std::string& output, int status);

class LocalDaemon {
 public:
  LocalDaemon();
  ~LocalDaemon();

  const std::string& dir() const { return dir_; }
  std::string config_dir() const { return dir_ + "/config"; }
  void write_config(const std::string& name, const std::string& yaml);
  // write_config(), then waits (up to 5 s) until the running daemon's
  // /config_dump shows a change.
  void apply(const std::string& name, const std::string& yaml);

  // Starts a peer process (server) with its output in dir()/<log>.log and
  // waits until that log contains `ready` (empty: no wait). Returns its pid,
  // 0 on failure.
  pid_t start_peer(const std::vector<std::string>& argv, const std::string& log,
                  const std::string& ready = "listening");
  // One python3-thrift sample server on loopback and, in svc.yaml, the
  // sample ServiceEntry in front of it on a loopback "VIP" port, followed by
  // `more_yaml` (e.g. a MetaRouter). Ports 0 on failure.
  struct LoopbackService {
    int upstream = 0, vip = 0;
  };
  LoopbackService serve_thrift_sample(const std::string& more_yaml = "");
  // Starts metanoded --no-bpf on config_dir() (or, with `manifests` false,
  // on whatever source `extra_args` names) and waits for /ready.
  bool start(const std::vector<std::string>& extra_args = {}, bool manifests = true);
  pid_t daemon_pid() const { return daemon_pid_; }
  // Runs a client to completion and parses its summary.
  ClientSummary run_client(const std::vector<std::string>& argv, int timeout_ms = 60000);

  std::string admin(const std::string& path);
  std::string admin_port_str() const { return std::to_string(admin_port_); }
  uint64_t metric(const std::string& name) { return testbed::metric(admin("/stats/prometheus"), name); }
  std::string log() const { return slurp(dir_ + "/daemon.log"); }
  ProcessGroup& processes() { return procs_; }

 private:
  ProcessGroup procs_;
  std::string dir_;
  int admin_port_ = 0;
  pid_t daemon_pid_ = 0;
  int clients_ = 0;
};

}  // namespace metanode::testbed
