// metanoded's process: wires configuration, kernel interception, data plane
// and admin together and owns the order in which they start and stop.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "metanode/core/access_log.h"
#include "metanode/core/server.h"
#include "metanode/net.h"
#include "metanode/xds/xds_client.h"

namespace metanode::core {

struct DaemonOptions {
  std::string config_dir;       // embedded control plane: manifests to serve
  std::string xds_address;      // else: an xDS server (HOST:PORT) to pull from
  std::map<std::string, std::string> xds_clusters;  // gRPC cluster -> HOST:PORT (aeraki-xds)
  std::map<std::string, std::string> xds_cluster_tls;  // gRPC cluster -> TLS name or "plaintext"
  bool xds_delta = false;       // delta xDS instead of state of the world
  std::chrono::milliseconds xds_first_response_timeout{15000};  // a silent stream is restarted
  xds::NodeIdentity node;       // who we are to the xDS server
  xds::XdsSecurity xds_security;  // TLS / token / cluster id for xDS and the CA
  std::string ca_address;       // Istio CA (HOST:PORT): a workload certificate for mTLS xDS
  std::string trust_domain = "cluster.local";
  std::chrono::seconds cert_ttl{24 * 3600};  // asked of the CA (istio-agent's SECRET_TTL)
  bool intercept = true;        // false: --no-bpf, bind listeners directly
  std::string cgroup;           // cgroup v2 dir to attach to (default: cgroup2 root)
  std::string pin_dir;          // default /sys/fs/bpf/metanode
  std::optional<net::Endpoint> redirect;  // default: first non-loopback IPv4, port 15001
  net::Endpoint admin{0x7f000001, 15000};
  std::optional<net::Endpoint> metrics;    // Prometheus alone (Istio: 15020)
  std::optional<net::Endpoint> readiness;  // /healthz/ready alone (Istio: 15021)
  size_t workers = 0;
  bool skmsg = true;
  bool skmsg_upstream = false;  // also daemon<->upstream when the upstream is a local pod
  bool pod_mode_all = true;     // every non-host netns is a pod; false: only mn_pods entries
  std::string pods_netns_dir;   // learn pods from netns files here (implies !pod_mode_all)
  std::string pods_netns_prefix;
  // --pods kubernetes: the node's pods (node.node_name) from the API server
  // (kube_api; empty: in-cluster), matched by IP to the runtime's netns files.
  bool pods_kubernetes = false;
  std::string kube_api, kube_token_file, kube_ca_file;  // empty: the service account's
  std::string kube_netns_dir = "/var/run/netns", kube_netns_prefix = "cni-";
  bool manage_host_netns = false;
  std::vector<uint16_t> exclude_ports;  // never intercepted, for every pod
  std::chrono::milliseconds request_timeout{30000};
  DownstreamLimits downstream;  // per client connection
  std::chrono::milliseconds drain_timeout{5000};
  // Hitless restart: the unix socket ("@NAME": abstract) where this daemon
  // offers its listening sockets to a successor, and where it first looks
  // for a predecessor to take them from. Empty: off.
  std::string handover;
  std::chrono::milliseconds handover_wait{30000};  // for our configuration before taking over
  bool seccomp = true;  // the system call allow-list after start (docs/SECURITY.md)
  std::optional<AccessLogOptions> access_log;  // --access-log
  std::chrono::milliseconds watch_interval{1000};
};

// Runs until SIGINT/SIGTERM. Returns the process exit code; start-up
// failures print one message that says what to fix.
int run_daemon(const DaemonOptions& opts);

}  // namespace metanode::core
