#include "metanode/xds/xds_server.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <deque>
#include <map>
#include <mutex>
#include <set>

#include "envoy/service/discovery/v3/discovery.grpc.pb.h"
#include "envoy/service/route/v3/rds.grpc.pb.h"
#include "metanode/xds/manifest_source.h"

namespace metanode::xds {
namespace {

using envoy::service::discovery::v3::DeltaDiscoveryRequest;
using envoy::service::discovery::v3::DeltaDiscoveryResponse;
using envoy::service::discovery::v3::DiscoveryRequest;
using envoy::service::discovery::v3::DiscoveryResponse;

struct Entry {
  std::string version;
  google::protobuf::Any any;
  std::shared_ptr<const google::protobuf::Message> source;  // what `any` holds
};
// type_url -> name -> resource: immutable once published, shared by the sets
// published after it while the resource is unchanged.
using Served = std::map<std::string, std::map<std::string, std::shared_ptr<const Entry>>>;

// Serializes and versions each resource, except one that is the very object
// served before (resources are immutable, see resources.h): its entry is
// taken as it was, so an edit costs the resources it changed.
template <class T>
void add_all(Served& out, const Served& before, const char* type, const std::vector<Shared<T>>& list) {
  auto& m = out[type];
  auto was = before.find(type);
  for (const auto& r : list) {
    std::string name = resource_name(*r);
    if (was != before.end()) {
      auto it = was->second.find(name);
      if (it != was->second.end() && it->second->source == r) {
        m.emplace(std::move(name), it->second);
        continue;
      }
    }
    auto e = std::make_shared<Entry>();
    e->any.set_type_url(type);
    e->any.set_value(deterministic_bytes(*r));
    e->version = content_hash(e->any.value());
    e->source = r;
    m[std::move(name)] = std::move(e);
  }
}

// Listener and Cluster responses must carry every resource (SotW); others
// may carry only what changed.
bool full_set_type(const std::string& type) { return type == kListenerType || type == kClusterType; }

}  // namespace

// What the server tells every stream.
class StreamBase {
 public:
  virtual ~StreamBase() = default;
  virtual void on_update(std::shared_ptr<const Served> s) = 0;  // Impl::mu held
};

struct XdsServer::Impl {
  std::unique_ptr<grpc::Server> server;
  mutable std::mutex mu;  // guards the fields below
  std::shared_ptr<const Served> served = std::make_shared<Served>();
  std::set<StreamBase*> streams;
  XdsServerStats stats;
  uint64_t nonce = 0;

  class Ads;
  class Rds;
  std::unique_ptr<Ads> ads;
  std::unique_ptr<Rds> rds;
};

// One client stream's mechanics, for either protocol variant. Reads run
// continuously; responses queue and go out one write at a time. Locking:
// Impl::mu before Reactor::mu_, never the reverse. The variant's hooks run
// with mu_ held (handle() with Impl::mu too) and queue responses.
template <class Req, class Resp>
class Reactor : public StreamBase, public grpc::ServerBidiReactor<Req, Resp> {
 public:
  Reactor(XdsServer::Impl& srv, const char* only_type) : srv_(srv), only_type_(only_type) {}

  // After construction, so no hook runs on a half-built object.
  Reactor* start() {
    {
      std::lock_guard<std::mutex> l(srv_.mu);
      served_ = srv_.served;
      srv_.streams.insert(this);
      ++srv_.stats.streams_active;
      ++srv_.stats.streams_total;
    }
    this->StartRead(&req_);
    return this;
  }

  void on_update(std::shared_ptr<const Served> s) final {
    bool start = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      served_ = std::move(s);
      for (auto& [type, sub] : subs_) maybe_send(type, sub);
      start = claim_write();
    }
    if (start) this->StartWrite(&out_.front());
  }

  void OnReadDone(bool ok) final {
    if (!ok) {
      close();
      return;
    }
    bool start = false;
    {
      std::lock_guard<std::mutex> sl(srv_.mu);
      std::lock_guard<std::mutex> l(mu_);
      if (req_.has_node() && node_id_.empty()) {
        node_id_ = req_.node().id();
        spdlog::info("xds stream from node '{}'", node_id_);
      }
      if (only_type_ && req_.type_url() != only_type_) {
        spdlog::warn("node '{}': type {} asked on the RDS service, ignored", node_id_, req_.type_url());
      } else {
        bool first = !subs_.count(req_.type_url());
        Sub& sub = subs_[req_.type_url()];
        // A stale nonce: a newer response is on its way; nothing to do.
        if (req_.response_nonce().empty() || answer(req_, sub.nonce)) handle(req_, sub, first);
      }
      start = claim_write();
    }
    if (start) this->StartWrite(&out_.front());
    this->StartRead(&req_);
  }

  void OnWriteDone(bool ok) final {
    bool next = false, finish = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      out_.pop_front();
      if (!ok) closing_ = true;
      if (!out_.empty() && !closing_) {
        next = true;
      } else {
        writing_ = false;
        finish = closing_ && !finished_;
        if (finish) finished_ = true;
      }
    }
    if (next) this->StartWrite(&out_.front());
    if (finish) this->Finish(grpc::Status::OK);
  }

  void OnDone() final {
    {
      std::lock_guard<std::mutex> l(srv_.mu);
      srv_.streams.erase(this);
      --srv_.stats.streams_active;
    }
    delete this;
  }

 protected:
  // One type's subscription on this stream.
  struct Sub {
    bool wildcard = false;
    std::set<std::string> names;
    std::map<std::string, std::string> sent;  // name -> version the client has
    bool responded = false;
    std::string nonce;  // of our last response
  };
  // A request about `sub` (its first if `first`), ACK/NACK already counted.
  virtual void handle(const Req& q, Sub& sub, bool first) = 0;
  // Queues a response if the client lacks something of this type.
  virtual void maybe_send(const std::string& type, Sub& sub) = 0;
  void queue(Resp r) {
    ++srv_.stats.responses;
    out_.push_back(std::move(r));
  }
  const std::map<std::string, std::shared_ptr<const Entry>>& served(const std::string& type) const {
    static const std::map<std::string, std::shared_ptr<const Entry>> kNone;
    auto it = served_->find(type);
    return it == served_->end() ? kNone : it->second;
  }
  std::string next_nonce() { return std::to_string(++srv_.nonce); }

  XdsServer::Impl& srv_;
  std::string node_id_;

 private:
  // An ACK or NACK of our last response of this type; false if stale.
  bool answer(const Req& q, const std::string& nonce) {
    if (q.response_nonce() != nonce) return false;
    if (q.has_error_detail()) {
      ++srv_.stats.nacks;
      spdlog::warn("node '{}' NACKed {}: {}", node_id_, short_type(q.type_url()), q.error_detail().message());
    } else {
      ++srv_.stats.acks;
    }
    return true;
  }
  bool claim_write() {
    if (out_.empty() || writing_ || closing_) return false;
    writing_ = true;
    return true;
  }
  void close() {
    bool finish = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      closing_ = true;
      finish = !writing_ && !finished_;
      if (finish) finished_ = true;
    }
    if (finish) this->Finish(grpc::Status::OK);
  }

  const char* only_type_;  // RDS service: routes only
  Req req_;
  std::mutex mu_;
  std::shared_ptr<const Served> served_;
  std::deque<Resp> out_;  // front is being written while writing_
  bool writing_ = false, closing_ = false, finished_ = false;
  std::map<std::string, Sub> subs_;  // by type URL
};

// State of the world: a response carries every subscribed resource of a
// full-set type (Listener, Cluster), or the changed ones of the others.
class SotwStream : public Reactor<DiscoveryRequest, DiscoveryResponse> {
 public:
  using Reactor::Reactor;

 private:
  void handle(const DiscoveryRequest& q, Sub& sub, bool first) override {
    std::set<std::string> names(q.resource_names().begin(), q.resource_names().end());
    if (first) sub.wildcard = names.empty() || names.count("*");
    else if (names.count("*")) sub.wildcard = true;
    names.erase("*");
    if (!sub.wildcard) {
      // Forget what we sent for names no longer subscribed: subscribing
      // again later must resend them.
      for (auto it = sub.sent.begin(); it != sub.sent.end();)
        it = names.count(it->first) ? std::next(it) : sub.sent.erase(it);
    }
    sub.names = std::move(names);
    maybe_send(q.type_url(), sub);
  }

  void maybe_send(const std::string& type, Sub& sub) override {
    const auto& all = served(type);
    std::vector<const std::pair<const std::string, std::shared_ptr<const Entry>>*> want;
    if (sub.wildcard) {
      for (const auto& kv : all) want.push_back(&kv);
    } else {
      for (const auto& n : sub.names)
        if (auto it = all.find(n); it != all.end()) want.push_back(&*it);
    }
    bool changed = !sub.responded;
    std::vector<const std::pair<const std::string, std::shared_ptr<const Entry>>*> send;
    for (const auto* kv : want) {
      auto s = sub.sent.find(kv->first);
      bool differs = s == sub.sent.end() || s->second != kv->second->version;
      changed |= differs;
      if (differs || full_set_type(type) || !sub.responded) send.push_back(kv);
    }
    if (full_set_type(type) && sub.sent.size() != want.size()) changed = true;  // removals
    if (!changed) return;

    DiscoveryResponse r;
    r.set_type_url(type);
    // The version names the client's whole state of this type.
    std::string ver;
    for (const auto* kv : want) ver += kv->first + "=" + kv->second->version + ";";
    r.set_version_info(content_hash(ver));
    r.set_nonce(next_nonce());
    r.mutable_control_plane()->set_identifier("metanode-xds");
    if (full_set_type(type)) sub.sent.clear();
    for (const auto* kv : send) {
      *r.add_resources() = kv->second->any;
      sub.sent[kv->first] = kv->second->version;
    }
    sub.responded = true;
    sub.nonce = r.nonce();
    spdlog::debug("node '{}': {} version {} with {} resources", node_id_, short_type(type),
                  r.version_info(), r.resources_size());
    queue(std::move(r));
  }
};

// Delta: each response carries the resources the client lacks or holds at
// another version, and the names it holds that are gone.
class DeltaStream : public Reactor<DeltaDiscoveryRequest, DeltaDiscoveryResponse> {
 public:
  using Reactor::Reactor;

 private:
  void handle(const DeltaDiscoveryRequest& q, Sub& sub, bool first) override {
    if (first) {
      // An empty first request is the legacy wildcard; a reconnecting client
      // says what it holds, which is then not sent again.
      sub.wildcard = q.resource_names_subscribe().empty();
      for (const auto& [n, v] : q.initial_resource_versions()) sub.sent[n] = v;
    }
    for (const auto& n : q.resource_names_subscribe()) {
      if (n == "*") sub.wildcard = true;
      else sub.names.insert(n);
    }
    for (const auto& n : q.resource_names_unsubscribe()) {
      if (n == "*") sub.wildcard = false;
      sub.names.erase(n);
      sub.sent.erase(n);
    }
    maybe_send(q.type_url(), sub);
  }

  void maybe_send(const std::string& type, Sub& sub) override {
    const auto& all = served(type);
    DeltaDiscoveryResponse r;
    auto add = [&](const std::string& name, const Entry& e) {
      auto s = sub.sent.find(name);
      if (s != sub.sent.end() && s->second == e.version) return;
      auto* res = r.add_resources();
      res->set_name(name);
      res->set_version(e.version);
      *res->mutable_resource() = e.any;
      sub.sent[name] = e.version;
    };
    if (sub.wildcard) {
      for (const auto& [n, e] : all) add(n, *e);
    } else {
      for (const auto& n : sub.names)
        if (auto it = all.find(n); it != all.end()) add(n, *it->second);
    }
    for (auto it = sub.sent.begin(); it != sub.sent.end();) {
      if (all.count(it->first)) {
        ++it;
        continue;
      }
      r.add_removed_resources(it->first);
      it = sub.sent.erase(it);
    }
    // The first request is always answered, even with nothing, so the
    // client knows it has everything there is.
    if (sub.responded && r.resources_size() == 0 && r.removed_resources_size() == 0) return;
    r.set_type_url(type);
    r.set_nonce(next_nonce());
    r.set_system_version_info(r.nonce());
    r.mutable_control_plane()->set_identifier("metanode-xds");
    sub.responded = true;
    sub.nonce = r.nonce();
    queue(std::move(r));
  }
};

class XdsServer::Impl::Ads
    : public envoy::service::discovery::v3::AggregatedDiscoveryService::CallbackService {
 public:
  explicit Ads(Impl& i) : impl_(i) {}
  grpc::ServerBidiReactor<DiscoveryRequest, DiscoveryResponse>* StreamAggregatedResources(
      grpc::CallbackServerContext*) override {
    return (new SotwStream(impl_, nullptr))->start();
  }
  grpc::ServerBidiReactor<DeltaDiscoveryRequest, DeltaDiscoveryResponse>* DeltaAggregatedResources(
      grpc::CallbackServerContext*) override {
    return (new DeltaStream(impl_, nullptr))->start();
  }

 private:
  Impl& impl_;
};

class XdsServer::Impl::Rds : public envoy::service::route::v3::RouteDiscoveryService::CallbackService {
 public:
  explicit Rds(Impl& i) : impl_(i) {}
  grpc::ServerBidiReactor<DiscoveryRequest, DiscoveryResponse>* StreamRoutes(
      grpc::CallbackServerContext*) override {
    return (new SotwStream(impl_, kRouteType))->start();
  }
  grpc::ServerBidiReactor<DeltaDiscoveryRequest, DeltaDiscoveryResponse>* DeltaRoutes(
      grpc::CallbackServerContext*) override {
    return (new DeltaStream(impl_, kRouteType))->start();
  }

 private:
  Impl& impl_;
};

XdsServer::XdsServer() : impl_(std::make_unique<Impl>()) {}

XdsServer::~XdsServer() { stop(); }

Result<int> XdsServer::start(const std::string& listen) {
  impl_->ads = std::make_unique<Impl::Ads>(*impl_);
  impl_->rds = std::make_unique<Impl::Rds>(*impl_);
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  b.RegisterService(impl_->ads.get());
  b.RegisterService(impl_->rds.get());
  b.SetMaxSendMessageSize(64 << 20);
  impl_->server = b.BuildAndStart();
  if (!impl_->server || port == 0) return Error::invalid("cannot listen on " + listen);
  return port;
}

void XdsServer::stop() {
  if (!impl_->server) return;
  // Streams never end on their own: cancel them after a short grace.
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  impl_->server->Wait();
  impl_->server.reset();
}

std::string XdsServer::update(const Resources& res) {
  std::shared_ptr<const Served> before;
  {
    std::lock_guard<std::mutex> l(impl_->mu);
    before = impl_->served;
  }
  auto s = std::make_shared<Served>();
  add_all(*s, *before, kListenerType, res.listeners);
  add_all(*s, *before, kClusterType, res.clusters);
  add_all(*s, *before, kEndpointType, res.endpoints);
  add_all(*s, *before, kRouteType, res.routes);
  // The set's version from the resources' own: no second serialization.
  std::string names;
  for (const auto& [type, m] : *s)
    for (const auto& [name, e] : m) names += type + "/" + name + "=" + e->version + ";";
  std::string version = content_hash(names);
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->served = s;
  for (auto* st : impl_->streams) st->on_update(s);
  return version;
}

XdsServerStats XdsServer::stats() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->stats;
}

}  // namespace metanode::xds
