// --pods kubernetes: the node's pods from the API server (list + watch of
// pods on this node and of namespaces), turned into the two things the
// daemon needs: which pod network namespaces are managed (mn_pods, through
// the runtime's netns files matched by pod IP), and who each client is
// (the PeerTable the workers read at accept).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <atomic>
#include <chrono>
#include <mutex>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "metanode/bpf/maps.h"
#include "metanode/core/peers.h"
#include "metanode/core/pod_watcher.h"
#include "metanode/core/server.h"
#include "metanode/kube/api_client.h"
#include "metanode/kube/pod_directory.h"
#include "metanode/kube/reflector.h"

namespace metanode::core {

struct KubePodsOptions {
  kube::ApiConfig api;
  std::string node_name;
  std::string trust_domain = "cluster.local";
  std::string cluster_id = "Kubernetes";  // source_cluster of its pods' requests
  std::string netns_dir = "/var/run/netns", netns_prefix = "cni-";  // with interception
  std::chrono::seconds watch_timeout{300};
};

class KubePods {
 public:
  // `maps` null (--no-bpf): identities only.
  KubePods(boost::asio::io_context& io, KubePodsOptions o, bpf::Maps* maps, Server& server);
  ~KubePods();
  Result<void> start();
  void stop();
  void rescan();  // the runtime's netns files again (new sandboxes, CNI done)

  // From any thread (the admin servers'): a copy refreshed on the loop at
  // every change and every rescan.
  bool synced() const { return synced_.load(std::memory_order_acquire); }
  std::string waiting_for() const;
  std::string metrics_text() const;

 private:
  bool lists_in() const;
  void refresh_status();
  std::string render_metrics() const;
  void on_change();
  void publish_peers();
  std::shared_ptr<const PeerIdentity> identity_of(const kube::Pod& p);

  boost::asio::io_context& io_;
  KubePodsOptions o_;
  bpf::Maps* maps_;
  Server& server_;
  std::shared_ptr<boost::asio::ssl::context> tls_;
  kube::PodDirectory dir_;
  std::unique_ptr<kube::Reflector> pods_, namespaces_;
  std::unique_ptr<PodWatcher> netns_;
  std::set<uint32_t> enrolled_ipv4_;
  std::map<std::string, bool> enrolled_;  // pod key -> last decision, to log changes
  std::map<std::string, std::shared_ptr<const PeerIdentity>> identities_;  // kept while equal
  std::atomic<bool> synced_{false};
  mutable std::mutex status_mu_;
  std::string waiting_, metrics_;  // guarded by status_mu_
};

}  // namespace metanode::core
