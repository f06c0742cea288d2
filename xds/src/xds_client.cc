#include "metanode/xds/xds_client.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <optional>
#include <random>

#include "envoy/service/discovery/v3/discovery.grpc.pb.h"
#include "envoy/service/route/v3/rds.grpc.pb.h"
#include "metanode/json.h"

namespace metanode::xds {
namespace {

using envoy::service::discovery::v3::DeltaDiscoveryRequest;
using envoy::service::discovery::v3::DeltaDiscoveryResponse;
using envoy::service::discovery::v3::DiscoveryRequest;
using envoy::service::discovery::v3::DiscoveryResponse;
using ReaderWriter = grpc::ClientReaderWriter<DiscoveryRequest, DiscoveryResponse>;
using DeltaReaderWriter = grpc::ClientReaderWriter<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const char* const kTypeOrder[] = {kClusterType, kEndpointType, kListenerType, kRouteType};

std::string join_rejects(const std::vector<Reject>& rs) {
  std::string out;
  for (const auto& r : rs) {
    if (!out.empty()) out += "; ";
    out += r.str();
  }
  return out;
}

}  // namespace

// Per stream and type: what we subscribed to, what we accepted, what the
// server last said.
struct XdsClient::TypeState {
  std::set<std::string> names;  // empty + wildcard: everything
  bool wildcard = false;
  bool requested = false;       // a request for this type went out on this stream
  bool received = false;        // at least one response since start
  std::string version;          // last accepted (ACKed) version_info
  std::string nonce;            // last response's nonce
  std::string last_nack;
  std::string nacked_version;  // the version last NACKed, and how many times in a row
  int nack_repeats = 0;
  int64_t last_update_unix = 0;
  uint64_t updates = 0, rejects = 0;
  // Delta: what the server was told we subscribe to, and the versions we
  // hold (initial_resource_versions on a new stream).
  std::set<std::string> told;
  bool told_wildcard = false;
  std::map<std::string, std::string> versions;
};

struct XdsClient::Stream {
  std::string cluster;  // "" for ADS
  std::string target;   // HOST:PORT
  XdsSecurity security;  // how this server is reached
  std::map<std::string, TypeState> types;
  std::thread thread;
  // Set while connected; writes go through write_mu (one writer at a time,
  // concurrently with the stream's own reader).
  grpc::ClientContext* ctx = nullptr;
  ReaderWriter* rw = nullptr;        // state of the world
  DeltaReaderWriter* drw = nullptr;  // or delta (--xds-delta)
  std::mutex write_mu;
  bool node_sent = false;
  bool got_response = false;
  std::chrono::steady_clock::time_point connected_at;
  uint64_t connects = 0;

  bool ads() const { return cluster.empty(); }
  bool connected() const { return rw || drw; }
  std::string label() const { return ads() ? "ads" : "rds:" + cluster; }
};

XdsClient::XdsClient(XdsClientOptions opts) : opts_(std::move(opts)) {}

XdsClient::~XdsClient() { stop(); }

Result<void> XdsClient::start(ConfigSink& sink) {
  if (opts_.server.empty()) return Error::invalid("xDS: no server address");
  if (opts_.node.id().empty()) return Error::invalid("xDS: no node id");
  sink_ = &sink;
  std::lock_guard<std::mutex> l(mu_);
  auto& cds = stream_for("").types[kClusterType];
  cds.wildcard = true;
  cds.requested = true;
  watchdog_ = std::thread([this] { watchdog(); });
  return Ok();
}

XdsClient::Stream& XdsClient::stream_for(const std::string& cluster) {
  for (auto& s : streams_)
    if (s->cluster == cluster) return *s;
  auto s = std::make_unique<Stream>();
  s->cluster = cluster;
  auto it = opts_.clusters.find(cluster);
  s->target = cluster.empty() || it == opts_.clusters.end() ? opts_.server : it->second;
  s->security = opts_.security;
  if (auto t = opts_.cluster_tls.find(cluster); !cluster.empty() && t != opts_.cluster_tls.end()) {
    if (t->second == XdsClientOptions::kPlaintext) {
      // No TLS: nothing secret goes to it either.
      s->security.root_cert_file.clear();
      s->security.token_file.clear();
    } else {
      s->security.server_name = t->second;
    }
  }
  Stream* raw = s.get();
  streams_.push_back(std::move(s));
  raw->thread = std::thread([this, raw] { run(*raw); });
  return *raw;
}

void XdsClient::stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_.exchange(true)) return;
    for (auto& s : streams_)
      if (s->ctx) s->ctx->TryCancel();
  }
  cv_.notify_all();
  for (auto& s : streams_)
    if (s->thread.joinable()) s->thread.join();
  if (watchdog_.joinable()) watchdog_.join();
}

namespace {

DiscoveryRequest request_for(const std::string& type, const XdsClient::TypeState& t) {
  DiscoveryRequest q;
  q.set_type_url(type);
  q.set_version_info(t.version);
  q.set_response_nonce(t.nonce);
  for (const auto& n : t.names) q.add_resource_names(n);
  return q;
}

}  // namespace

// Sends one request on `s` if it is connected (else on_connected sends the
// whole subscription when it is). The node goes on a stream's first request.
template <class Request, class RW>
static void write(XdsClient::Stream& s, RW* rw, Request q, const envoy::config::core::v3::Node& node) {
  if (!rw) return;
  if (!s.node_sent) {
    *q.mutable_node() = node;
    s.node_sent = true;
  }
  if (!rw->Write(q)) spdlog::debug("xds {}: write failed (stream closing)", s.label());
}

static void send(XdsClient::Stream& s, DiscoveryRequest q, const envoy::config::core::v3::Node& node) {
  std::lock_guard<std::mutex> w(s.write_mu);
  write(s, s.rw, std::move(q), node);
}

static void send(XdsClient::Stream& s, DeltaDiscoveryRequest q, const envoy::config::core::v3::Node& node) {
  std::lock_guard<std::mutex> w(s.write_mu);
  write(s, s.drw, std::move(q), node);
}

void XdsClient::subscribe(Stream& s, const std::string& type, TypeState& t) {
  if (!opts_.delta) {
    send(s, request_for(type, t), opts_.node);
    return;
  }
  // Delta: only the difference. A wildcard is the empty first request.
  DeltaDiscoveryRequest q;
  q.set_type_url(type);
  if (t.wildcard) {
    if (t.told_wildcard) return;
    t.told_wildcard = true;
  } else {
    for (const auto& n : t.names)
      if (!t.told.count(n)) q.add_resource_names_subscribe(n);
    for (const auto& n : t.told)
      if (!t.names.count(n)) q.add_resource_names_unsubscribe(n);
    if (q.resource_names_subscribe_size() == 0 && q.resource_names_unsubscribe_size() == 0) return;
    t.told = t.names;
  }
  send(s, std::move(q), opts_.node);
}

void XdsClient::answer(Stream& s, const std::string& type, TypeState& t, const std::string& nonce,
                       const std::string* error) {
  auto set_error = [&](google::rpc::Status* st) {
    st->set_code(grpc::StatusCode::INVALID_ARGUMENT);
    st->set_message(*error);
  };
  if (opts_.delta) {
    DeltaDiscoveryRequest q;
    q.set_type_url(type);
    q.set_response_nonce(nonce);
    if (error) set_error(q.mutable_error_detail());
    send(s, std::move(q), opts_.node);
  } else {
    DiscoveryRequest q = request_for(type, t);  // version: the last accepted
    q.set_response_nonce(nonce);
    if (error) set_error(q.mutable_error_detail());
    send(s, std::move(q), opts_.node);
  }
}

void XdsClient::on_connected(Stream& s) {
  // A new stream knows nothing: say every subscription again, with the
  // versions we hold, in Envoy's order. Nonces do not survive a stream.
  for (const char* type : kTypeOrder) {
    auto it = s.types.find(type);
    if (it == s.types.end() || !it->second.requested) continue;
    auto& t = it->second;
    if (!opts_.delta) {
      auto q = request_for(type, t);
      q.clear_response_nonce();
      send(s, std::move(q), opts_.node);
      continue;
    }
    DeltaDiscoveryRequest q;
    q.set_type_url(type);
    if (!t.wildcard)
      for (const auto& n : t.names) q.add_resource_names_subscribe(n);
    for (const auto& [n, v] : t.versions)
      if (t.wildcard || t.names.count(n)) (*q.mutable_initial_resource_versions())[n] = v;
    t.told = t.names;
    t.told_wildcard = t.wildcard;
    send(s, std::move(q), opts_.node);
  }
}

void XdsClient::run(Stream& s) {
  std::mt19937_64 rng(std::random_device{}());
  int attempt = 0;
  while (!stopping_) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetMaxReceiveMessageSize(int(opts_.max_message_bytes));
    if (s.security.tls() && !s.security.server_name.empty())
      args.SetSslTargetNameOverride(s.security.server_name);
    // Credentials and headers are made for every connection: the token file
    // and the workload certificate rotate.
    auto cert = opts_.ca && s.security.tls() ? opts_.ca->current() : nullptr;
    auto creds = s.security.credentials(cert.get());
    grpc::ClientContext ctx;
    Result<void> auth = creds ? s.security.authenticate(ctx) : Result<void>(creds.error());
    if (!auth) {
      spdlog::error("xds {} {}: {}", s.label(), s.target, auth.error().message());
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, opts_.backoff_max / 4, [&] { return stopping_.load(); });
      continue;
    }
    auto channel = grpc::CreateCustomChannel(s.target, *creds, args);
    std::unique_ptr<ReaderWriter> rw;
    std::unique_ptr<DeltaReaderWriter> drw;
    std::unique_ptr<envoy::service::discovery::v3::AggregatedDiscoveryService::Stub> ads;
    std::unique_ptr<envoy::service::route::v3::RouteDiscoveryService::Stub> rds;
    {
      // Visible to stop() and the watchdog before the call starts: opening a
      // sync stream blocks until the connection is up, and a server that
      // accepts but never speaks HTTP/2 would hold it there.
      std::lock_guard<std::mutex> l(mu_);
      std::lock_guard<std::mutex> w(s.write_mu);
      if (stopping_) ctx.TryCancel();
      s.ctx = &ctx;
      s.got_response = false;
      s.connected_at = std::chrono::steady_clock::now();
    }
    if (s.ads()) {
      ads = envoy::service::discovery::v3::AggregatedDiscoveryService::NewStub(channel);
      if (opts_.delta) drw = ads->DeltaAggregatedResources(&ctx);
      else rw = ads->StreamAggregatedResources(&ctx);
    } else {
      rds = envoy::service::route::v3::RouteDiscoveryService::NewStub(channel);
      if (opts_.delta) drw = rds->DeltaRoutes(&ctx);
      else rw = rds->StreamRoutes(&ctx);
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      {
        std::lock_guard<std::mutex> w(s.write_mu);
        s.rw = rw.get();
        s.drw = drw.get();
        s.node_sent = false;
        ++s.connects;
      }
      on_connected(s);
    }
    auto on_update = [&](const Update& u) {
      {
        std::lock_guard<std::mutex> w(s.write_mu);
        s.got_response = true;
      }
      attempt = 0;
      if (auto d = handle(s, u)) {
        std::unique_lock<std::mutex> l(mu_);
        if (cv_.wait_for(l, d->pause, [&] { return stopping_.load(); })) return false;
        send(s, std::move(d->request), opts_.node);
      }
      return true;
    };
    if (rw) {
      DiscoveryResponse resp;
      while (rw->Read(&resp) && on_update(update_of(resp))) {
      }
    } else {
      DeltaDiscoveryResponse resp;
      while (drw->Read(&resp) && on_update(update_of(resp))) {
      }
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      std::lock_guard<std::mutex> w(s.write_mu);
      s.ctx = nullptr;
      s.rw = nullptr;
      s.drw = nullptr;
    }
    grpc::Status st = rw ? rw->Finish() : drw->Finish();
    if (stopping_) break;
    auto base = std::min<int64_t>(opts_.backoff_max.count(),
                                  opts_.backoff_base.count() << std::min(attempt, 16));
    ++attempt;
    // Full jitter over the upper half: many daemons losing one control
    // plane do not come back in lockstep.
    auto delay = std::chrono::milliseconds(
        std::uniform_int_distribution<int64_t>(base / 2, std::max<int64_t>(base / 2, base))(rng));
    spdlog::warn("xds {} {}: stream closed ({} {}); last good configuration stays; retry in {} ms",
                 s.label(), s.target, int(st.error_code()), st.error_message(), delay.count());
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, delay, [&] { return stopping_.load(); });
  }
}

void XdsClient::watchdog() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stopping_) {
    cv_.wait_for(l, std::chrono::milliseconds(500), [&] { return stopping_.load(); });
    auto now = std::chrono::steady_clock::now();
    for (auto& s : streams_) {
      std::lock_guard<std::mutex> w(s->write_mu);
      if (s->ctx && !s->got_response && now - s->connected_at > opts_.first_response_timeout) {
        spdlog::warn("xds {} {}: no response in {} ms, restarting the stream", s->label(), s->target,
                     opts_.first_response_timeout.count());
        s->ctx->TryCancel();
        s->connected_at = now;  // once per stream
      }
    }
  }
}

std::optional<XdsClient::Deferred> XdsClient::handle(Stream& s, const Update& r) {
  std::lock_guard<std::mutex> l(mu_);
  if (stopping_) return std::nullopt;
  const std::string& type = r.type_url;
  auto tit = s.types.find(type);
  if (tit == s.types.end() || !tit->second.requested) {
    spdlog::warn("xds {}: response of unrequested type '{}' ignored", s.label(), type);
    return std::nullopt;
  }
  TypeState& ts = tit->second;
  ts.nonce = r.nonce;
  ts.received = true;

  // The same version we just refused, sent again (go-control-plane answers
  // a NACK by resending whatever version it holds): refuse it again without
  // recompiling, after a growing pause, so the two sides do not spin.
  if (!opts_.delta && !ts.nacked_version.empty() && r.version == ts.nacked_version) {
    ++ts.nack_repeats;
    ++ts.rejects;
    DiscoveryRequest nack = request_for(type, ts);
    nack.set_response_nonce(r.nonce);
    nack.mutable_error_detail()->set_code(grpc::StatusCode::INVALID_ARGUMENT);
    nack.mutable_error_detail()->set_message(ts.last_nack);
    auto pause = std::min<int64_t>(opts_.backoff_max.count(),
                                   opts_.backoff_base.count() << std::min(ts.nack_repeats, 16));
    return Deferred{std::move(nack), std::chrono::milliseconds(pause)};
  }

  // A response that does not even decode changes nothing.
  std::vector<Reject> rejects;
  std::shared_ptr<const Snapshot> snap;
  if (auto m = merge_update(r, latest_, &digests_); !m) {
    rejects.push_back({type, "", m.error().message()});
  } else {
    auto applied = sink_->apply(latest_, "xds " + s.label() + " " + short_type(type), true);
    snap = applied.snapshot;
    for (auto& x : applied.rejects)
      if (x.type_url == type) rejects.push_back(std::move(x));
  }

  if (rejects.empty()) {
    ts.version = r.version;
    ts.last_update_unix = unix_now();
    ts.nacked_version.clear();
    ts.nack_repeats = 0;
    ++ts.updates;
    for (const auto& n : r.removed) ts.versions.erase(n);
    for (const auto& [n, v] : r.versions) ts.versions[n] = v;
    answer(s, type, ts, r.nonce, nullptr);
  } else {
    ++ts.rejects;
    ts.nacked_version = r.version;
    ts.nack_repeats = 0;
    ts.last_nack = join_rejects(rejects);
    spdlog::error("xds {}: NACK {} version {}: {}", s.label(), short_type(type), r.version, ts.last_nack);
    answer(s, type, ts, r.nonce, &ts.last_nack);
  }
  if (!snap) return std::nullopt;

  Stream& ads = *streams_[0];
  if (type == kClusterType) {
    // EDS follows CDS: subscribe to exactly the assignments our clusters use.
    std::set<std::string> want;
    for (const auto& [n, c] : snap->clusters)
      if (!c->eds_service.empty()) want.insert(c->eds_service);
    auto& eds = ads.types[kEndpointType];
    if (want != eds.names || !eds.requested) {
      eds.names = want;
      eds.requested = !want.empty() || eds.requested;
      if (eds.requested) subscribe(ads, kEndpointType, eds);
      std::erase_if(latest_.endpoints, [&](const auto& a) { return !want.count(a->cluster_name()); });
    }
  }
  // LDS once clusters (and their endpoints, if any) are in: a listener is
  // never live before the clusters its routes name.
  auto& eds = ads.types[kEndpointType];
  if (!lds_requested_ && (type == kEndpointType || (type == kClusterType && !eds.requested))) {
    lds_requested_ = true;
    auto& lds = ads.types[kListenerType];
    lds.wildcard = true;
    lds.requested = true;
    subscribe(ads, kListenerType, lds);
  }
  if (type == kListenerType) {
    // RDS follows LDS, on the stream each listener's config source names.
    std::map<std::string, std::set<std::string>> want;
    for (const auto& li : snap->listeners) want[li.rds_cluster].insert(li.route_name);
    for (auto& st : streams_) want.try_emplace(st->cluster);
    std::set<std::string> all;
    for (const auto& [cluster, rnames] : want) {
      all.insert(rnames.begin(), rnames.end());
      if (rnames.empty()) continue;  // an empty SotW request would mean "all": say nothing
      Stream& t = stream_for(cluster);
      auto& rds = t.types[kRouteType];
      if (rds.names == rnames && rds.requested) continue;
      rds.names = rnames;
      rds.requested = true;
      subscribe(t, kRouteType, rds);
    }
    std::erase_if(latest_.routes, [&](const auto& rc) { return !all.count(rc->name()); });
  }
  return std::nullopt;
}

bool XdsClient::synced() const { return waiting_for().empty(); }

std::string XdsClient::waiting_for() const {
  std::lock_guard<std::mutex> l(mu_);
  std::string out;
  for (const auto& s : streams_)
    for (const auto& [type, t] : s->types)
      if (t.requested && !t.received && (t.wildcard || !t.names.empty()))
        out += (out.empty() ? "" : ", ") + short_type(type) + " from " + s->label() + " " + s->target;
  if (streams_.empty() || !streams_[0]->types.count(kListenerType))
    out += std::string(out.empty() ? "" : ", ") + "Listener from ads " + opts_.server;
  return out;
}

std::string XdsClient::status_json() const {
  std::lock_guard<std::mutex> l(mu_);
  std::string o = "{\"source\":\"xds\",\"server\":" + json_string(opts_.server) +
                  ",\"node_id\":" + json_string(opts_.node.id()) + ",\"streams\":[";
  bool first_stream = true;
  for (const auto& s : streams_) {
    std::lock_guard<std::mutex> w(s->write_mu);
    o += std::string(first_stream ? "" : ",") + "{\"stream\":" + json_string(s->label()) +
         ",\"target\":" + json_string(s->target) + ",\"variant\":" + (opts_.delta ? "\"delta\"" : "\"sotw\"") +
         ",\"connected\":" + (s->connected() ? "true" : "false") +
         ",\"connects\":" + std::to_string(s->connects) + ",\"types\":[";
    first_stream = false;
    bool first = true;
    for (const auto& [type, t] : s->types) {
      if (!t.requested) continue;
      o += std::string(first ? "" : ",") + "{\"type_url\":" + json_string(type) +
           ",\"version\":" + json_string(t.version) + ",\"nonce\":" + json_string(t.nonce) +
           ",\"last_update_unix\":" + std::to_string(t.last_update_unix) +
           ",\"last_nack\":" + json_string(t.last_nack) + ",\"updates\":" + std::to_string(t.updates) +
           ",\"rejects\":" + std::to_string(t.rejects) + ",\"subscribed\":" +
           (t.wildcard ? "\"*\"" : std::to_string(t.names.size())) + "}";
      first = false;
    }
    o += "]}";
  }
  return o + "]}";
}

std::string XdsClient::metrics_text() const {
  std::lock_guard<std::mutex> l(mu_);
  std::string o =
      "# HELP metanode_xds_connected 1 while the stream to the xDS server is up\n"
      "# TYPE metanode_xds_connected gauge\n";
  for (const auto& s : streams_) {
    std::lock_guard<std::mutex> w(s->write_mu);
    o += "metanode_xds_connected{stream=\"" + s->label() + "\"} " + (s->connected() ? "1" : "0") + "\n";
  }
  int64_t now = unix_now();
  std::string upd, rej, age;
  for (const auto& s : streams_)
    for (const auto& [type, t] : s->types) {
      if (!t.requested) continue;
      std::string lbl = "{type=\"" + short_type(type) + "\",stream=\"" + s->label() + "\"} ";
      upd += "metanode_xds_updates_total" + lbl + std::to_string(t.updates) + "\n";
      rej += "metanode_xds_rejects_total" + lbl + std::to_string(t.rejects) + "\n";
      age += "metanode_xds_seconds_since_update" + lbl +
             std::to_string(t.last_update_unix ? now - t.last_update_unix : -1) + "\n";
    }
  return o +
         "# HELP metanode_xds_updates_total xDS responses applied and ACKed\n"
         "# TYPE metanode_xds_updates_total counter\n" + upd +
         "# HELP metanode_xds_rejects_total xDS responses NACKed (one or more resources refused)\n"
         "# TYPE metanode_xds_rejects_total counter\n" + rej +
         "# HELP metanode_xds_seconds_since_update Seconds since the last accepted update (-1: none)\n"
         "# TYPE metanode_xds_seconds_since_update gauge\n" + age;
}

envoy::config::core::v3::Node make_node(const NodeIdentity& n) {
  envoy::config::core::v3::Node node;
  std::string ns = n.namespace_.empty() ? "default" : n.namespace_;
  node.set_id(!n.id.empty() ? n.id
                            : "sidecar~" + n.ip + "~" + n.pod_name + "." + ns + "~" + ns +
                                  ".svc.cluster.local");
  node.set_user_agent_name("metanode");
  node.set_user_agent_version("0.1.0");
  auto& f = *node.mutable_metadata()->mutable_fields();
  auto put = [&](const char* k, const std::string& v) {
    if (!v.empty()) f[k].set_string_value(v);
  };
  put("NAMESPACE", ns);
  put("CLUSTER_ID", n.cluster_id);
  put("ISTIO_VERSION", n.istio_version);
  put("INSTANCE_IPS", n.ip);
  put("SERVICE_ACCOUNT", n.service_account);
  put("NODE_NAME", n.node_name);
  put("POD_NAME", n.pod_name);
  if (!n.labels.empty()) {
    auto& lf = *f["LABELS"].mutable_struct_value()->mutable_fields();
    for (const auto& [k, v] : n.labels) lf[k].set_string_value(v);
  }
  for (const auto& [k, v] : n.extra) f[k].set_string_value(v);
  return node;
}

}  // namespace metanode::xds
