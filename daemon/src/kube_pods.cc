#include "kube_pods.h"

#include <spdlog/spdlog.h>

#include <sstream>

#include "metanode/net.h"

namespace metanode::core {

KubePods::KubePods(boost::asio::io_context& io, KubePodsOptions o, bpf::Maps* maps, Server& server)
    : io_(io), o_(std::move(o)), maps_(maps), server_(server) {}

KubePods::~KubePods() { stop(); }

Result<void> KubePods::start() {
  if (o_.node_name.empty())
    return Error::invalid("--pods kubernetes: the node's name is not known (NODE_NAME or --node-name)");
  if (o_.api.tls) {
    auto tls = kube::make_tls_context(o_.api);
    if (!tls) return tls.error();
    tls_ = std::move(*tls);
  }
  auto transport = [this] {
    auto t = std::make_unique<kube::HttpTransport>(io_, tls_, o_.api);
    // A watch with no byte (not even a bookmark) for its timeout and a
    // minute more is a dead connection.
    t->set_idle_timeout(o_.watch_timeout + std::chrono::seconds(60));
    return t;
  };
  if (maps_)
    netns_ = std::make_unique<PodWatcher>(*maps_, o_.netns_dir, o_.netns_prefix, bpf::netns_info,
                                          [this](const bpf::NetnsInfo& n) {
                                            for (uint32_t a : n.ipv4)
                                              if (enrolled_ipv4_.count(a)) return true;
                                            return false;
                                          });
  dir_.on_change = [this] { on_change(); };
  kube::ReflectorOptions po;
  po.path = "/api/v1/pods";
  po.selector = "fieldSelector=spec.nodeName%3D" + o_.node_name;
  po.watch_timeout = o_.watch_timeout;
  pods_ = std::make_unique<kube::Reflector>(io_, transport(), po, dir_.pod_handler());
  kube::ReflectorOptions no = po;
  no.path = "/api/v1/namespaces";
  no.selector.clear();
  namespaces_ = std::make_unique<kube::Reflector>(io_, transport(), no, dir_.namespace_handler());
  // Namespaces first: a pod enrolled by its namespace's label is decided
  // right when the pods arrive.
  namespaces_->start();
  pods_->start();
  spdlog::info("pods of node {} from the Kubernetes API at {}", o_.node_name, o_.api.url());
  refresh_status();
  return Ok();
}

void KubePods::stop() {
  if (pods_) pods_->stop();
  if (namespaces_) namespaces_->stop();
}

bool KubePods::lists_in() const { return pods_ && namespaces_ && pods_->synced() && namespaces_->synced(); }

void KubePods::refresh_status() {
  std::string w;
  for (const auto* r : {namespaces_.get(), pods_.get()})
    if (r && !r->synced())
      w += (w.empty() ? "" : ", ") + r->path() + (r->last_error().empty() ? "" : " (" + r->last_error() + ")");
  std::string m = render_metrics();
  std::lock_guard<std::mutex> l(status_mu_);
  waiting_ = std::move(w);
  metrics_ = std::move(m);
  synced_.store(lists_in(), std::memory_order_release);
}

std::string KubePods::waiting_for() const {
  std::lock_guard<std::mutex> l(status_mu_);
  return waiting_;
}

std::string KubePods::metrics_text() const {
  std::lock_guard<std::mutex> l(status_mu_);
  return metrics_;
}

void KubePods::rescan() {
  if (netns_ && lists_in()) {
    // A namespace found, gone or probed to its addresses names a pod now.
    if (netns_->sync().seen) publish_peers();
  }
  refresh_status();  // the reflectors' counters move without changes too
}

std::shared_ptr<const PeerIdentity> KubePods::identity_of(const kube::Pod& p) {
  PeerIdentity id;
  id.pod = p.meta.namespace_ + "/" + p.meta.name;
  id.workload = kube::workload_name(p);
  id.namespace_ = p.meta.namespace_;
  id.principal = "spiffe://" + o_.trust_domain + "/ns/" + p.meta.namespace_ + "/sa/" + p.service_account;
  id.app = kube::app_label(p);
  id.version = kube::version_label(p);
  id.canonical_service = kube::canonical_service(p);
  id.canonical_revision = kube::canonical_revision(p);
  id.cluster = o_.cluster_id;
  auto& have = identities_[id.pod];
  auto same = [](const PeerIdentity& a, const PeerIdentity& b) {
    return a.workload == b.workload && a.namespace_ == b.namespace_ && a.principal == b.principal &&
           a.app == b.app && a.version == b.version && a.canonical_service == b.canonical_service &&
           a.canonical_revision == b.canonical_revision && a.cluster == b.cluster;
  };
  // The same object while nothing changed: the workers' metric series
  // caches are keyed by it.
  if (!have || !same(*have, id)) have = std::make_shared<const PeerIdentity>(std::move(id));
  return have;
}

void KubePods::on_change() {
  enrolled_ipv4_.clear();
  std::map<std::string, bool> now;
  for (const auto& [key, pod] : dir_.pods()) {
    auto e = dir_.enrollment(pod);
    now[key] = e.enrolled;
    auto was = enrolled_.find(key);
    if (was == enrolled_.end() || was->second != e.enrolled)
      spdlog::info("pod {} {}: {}", key, e.enrolled ? "enrolled" : "not enrolled", e.reason);
    if (e.enrolled) enrolled_ipv4_.insert(pod.ipv4.begin(), pod.ipv4.end());
  }
  for (const auto& [key, was] : enrolled_)
    if (!now.count(key)) spdlog::info("pod {} gone", key);
  enrolled_ = std::move(now);
  // Identities of pods gone are dropped once nothing refers to them.
  for (auto it = identities_.begin(); it != identities_.end();)
    it = dir_.pods().count(it->first) ? std::next(it) : identities_.erase(it);
  // Until both lists are in, a pod's namespace label may not be known yet:
  // the kernel side waits (pods connect directly meanwhile).
  if (netns_ && lists_in()) netns_->sync();
  publish_peers();
  refresh_status();
}

void KubePods::publish_peers() {
  auto t = std::make_shared<PeerTable>();
  for (const auto& [key, pod] : dir_.pods()) {
    if (pod.host_network) continue;  // the node's address is not this pod's
    auto id = identity_of(pod);
    for (uint32_t a : pod.ipv4) t->by_ipv4[a] = id;
  }
  if (netns_)
    for (const auto& [file, e] : netns_->entries())
      for (uint32_t a : e.info.ipv4)
        if (auto it = t->by_ipv4.find(a); it != t->by_ipv4.end()) t->by_netns[e.info.cookie] = it->second;
  server_.set_peers(std::move(t));
}

std::string KubePods::render_metrics() const {
  std::ostringstream o;
  auto per_resource = [&](const char* name, const char* help, auto value) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << (std::string(name).ends_with("_total") ? " counter\n" : " gauge\n");
    for (const auto* r : {pods_.get(), namespaces_.get()})
      if (r) o << name << "{resource=\"" << r->path().substr(r->path().rfind('/') + 1) << "\"} " << value(*r) << "\n";
  };
  per_resource("metanode_kube_synced", "1 once the resource's list is applied",
               [](const kube::Reflector& r) { return r.synced() ? 1 : 0; });
  per_resource("metanode_kube_lists_total", "Lists sent (the first, and after expiry or errors)",
               [](const kube::Reflector& r) { return r.stats().lists; });
  per_resource("metanode_kube_list_pages_total", "List pages read (limit/continue, 500 objects a page)",
               [](const kube::Reflector& r) { return r.stats().pages; });
  per_resource("metanode_kube_watch_events_total", "ADDED, MODIFIED and DELETED events received",
               [](const kube::Reflector& r) { return r.stats().events; });
  per_resource("metanode_kube_expired_total", "Watches or list pages whose version was gone (410): listed again",
               [](const kube::Reflector& r) { return r.stats().expired; });
  per_resource("metanode_kube_errors_total", "Failed lists and watches (retried with backoff)",
               [](const kube::Reflector& r) { return r.stats().errors; });
  size_t enrolled = 0;
  for (const auto& [k, e] : enrolled_) enrolled += e;
  o << "# HELP metanode_pods Pods of this node from the API server, by enrollment\n# TYPE metanode_pods gauge\n"
    << "metanode_pods{state=\"enrolled\"} " << enrolled << "\nmetanode_pods{state=\"not_enrolled\"} "
    << enrolled_.size() - enrolled << "\n";
  if (netns_) {
    size_t managed = 0;
    for (const auto& [f, e] : netns_->entries()) managed += e.managed;
    o << "# HELP metanode_pod_netns Pod network namespaces found, by whether mn_pods manages them\n"
         "# TYPE metanode_pod_netns gauge\nmetanode_pod_netns{state=\"managed\"} " << managed
      << "\nmetanode_pod_netns{state=\"unmanaged\"} " << netns_->entries().size() - managed << "\n";
  }
  o << "# HELP metanode_kube_objects_rejected_total Objects from the API server that did not parse\n"
       "# TYPE metanode_kube_objects_rejected_total counter\nmetanode_kube_objects_rejected_total "
    << dir_.rejected() << "\n";
  return o.str();
}

}  // namespace metanode::core
