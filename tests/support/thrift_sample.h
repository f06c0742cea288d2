// The Aeraki MetaRouter tutorial's Thrift sample on a Testbed: two
// python3-thrift servers (v1, v2) in their own pod namespaces, metanoded in
// the node namespace intercepting a client pod's cgroup, and the manifests
// (ServiceEntry + DestinationRule, MetaRouter per scenario) in a watched
// config directory. Shared by the root integration test and the demo.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "metanode/result.h"
#include "testbed.h"

namespace metanode::testbed {

struct SampleOptions {
  bool skmsg = true;
  bool skmsg_upstream = false;         // daemon --skmsg-upstream
  bool servers_in_pods_cgroup = false;  // so sockops sees the servers' accepted sockets
  std::vector<std::string> daemon_args;  // more metanoded flags
  std::string metanoded;  // path to the binary
  std::string peers_dir;  // tests/peers/thrift
  std::string gen_py;     // generated Python for hello.thrift
};

// Defaults from the build (compile definitions), overridable by environment.
SampleOptions sample_options_from_build();

struct ClientSummary {
  int status = -1;
  std::string output;  // every line the client printed
  int calls = 0, ok = 0, errors = 0, switches = 0;
  int transport_errors = 0;     // broken connections and failed connects (--reconnect)
  int ok_after_last_error = 0;  // successful calls since the last error of any kind
  std::map<std::string, int> by_server;         // server name -> replies
  std::map<std::string, int> by_method_server;  // "method:server" -> replies
  std::string first_error;
  std::vector<std::string> replies;  // the first few replies, verbatim
};

class ThriftSample {
 public:
  static constexpr const char* kVip = "10.96.0.10";
  static constexpr int kPort = 9090;
  static constexpr const char* kHost = "thrift-sample-server.meta-thrift.svc.cluster.local";

  static Result<std::unique_ptr<ThriftSample>> start(Testbed& tb, const SampleOptions& opts);

  // Replaces the MetaRouter (empty: none, i.e. Aeraki's default route) and
  // waits until the daemon reports the new configuration version.
  Result<void> set_meta_router(const std::string& yaml);
  // One client process, one connection, `calls` calls in the client pod.
  Result<ClientSummary> run_client(int calls, const std::string& method, bool quiet);
  // A client process left running: client.py with `args` (to the VIP
  // unless they name --host), in the client pod; finish_client() waits.
  struct RunningClient {
    pid_t pid;
    std::string log;
  };
  Result<RunningClient> start_client(const std::vector<std::string>& args);
  ClientSummary finish_client(const RunningClient& c, int timeout_ms = 120000);

  std::string admin(const std::string& path);
  std::map<std::string, uint64_t> bpf_counters();
  std::string server_log(const std::string& version);
  std::string daemon_log();
  std::string client_netns() const { return client_ns_; }
  std::string server_ip(const std::string& version) const;
  std::string server_netns(const std::string& version) const;
  pid_t daemon_pid() const { return daemon_; }
  // The daemon's command line, for a successor started the same way.
  const std::vector<std::string>& daemon_argv() const { return daemon_argv_; }

  static std::string method_route_yaml();  // sayHello -> v1, the rest to the service
  static std::string split_route_yaml(int v1, int v2);

 private:
  explicit ThriftSample(Testbed& tb) : tb_(tb) {}
  std::string config_version();

  Testbed& tb_;
  SampleOptions opts_;
  std::string client_ns_;
  std::string config_dir_;
  pid_t daemon_ = -1;
  std::vector<std::string> daemon_argv_;
};

}  // namespace metanode::testbed
