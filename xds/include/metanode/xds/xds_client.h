// metanoded's xDS client: ADS state of the world from istiod (or any xDS
// server) in Envoy's order CDS -> EDS -> LDS -> RDS, and routes from the RDS
// service each MetaProtocol listener names (Aeraki's "aeraki-xds": plain
// RouteDiscoveryService/StreamRoutes, not ADS). Every response is applied
// through the ConfigSink and answered with an ACK, or a NACK that names each
// refused resource; the last good configuration stays while a server is
// away, and streams reconnect with exponential backoff and jitter.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "envoy/config/core/v3/base.pb.h"
#include "envoy/service/discovery/v3/discovery.pb.h"
#include "metanode/xds/config_source.h"
#include "metanode/xds/istio_ca_client.h"
#include "metanode/xds/xds_update.h"


namespace metanode::xds {

struct XdsClientOptions {
  std::string server;  // HOST:PORT of the ADS server (istiod: 15010 plaintext)
  // gRPC clusters named by listeners' RDS config sources -> HOST:PORT.
  // A cluster not listed is reached at `server`.
  std::map<std::string, std::string> clusters;
  envoy::config::core::v3::Node node;
  XdsSecurity security;               // TLS, bearer token, cluster id (istiod 15012)
  // Per gRPC cluster: the TLS name its server's certificate must carry
  // (Aeraki's is not istiod's), or kPlaintext (no TLS, and so no token or
  // client certificate: older Aeraki releases serve plaintext). A cluster not
  // listed is reached with `security` as the ADS server is.
  std::map<std::string, std::string> cluster_tls;
  static constexpr char kPlaintext[] = "plaintext";
  const IstioCaClient* ca = nullptr;  // if set: its certificate is the client certificate
  std::chrono::milliseconds backoff_base{500};
  std::chrono::milliseconds backoff_max{30000};
  // A stream that brings no response at all in this time is restarted (a
  // server that accepted and stalls).
  std::chrono::milliseconds first_response_timeout{15000};
  size_t max_message_bytes = 64u << 20;
  // Delta (incremental) xDS: DeltaAggregatedResources / DeltaRoutes; each
  // response carries what changed and what was removed.
  bool delta = false;
};

class XdsClient : public ConfigSource {
 public:
  explicit XdsClient(XdsClientOptions opts);
  ~XdsClient() override;
  Result<void> start(ConfigSink& sink) override;
  void stop() override;
  bool synced() const override;
  std::string waiting_for() const override;
  std::string status_json() const override;
  std::string metrics_text() const override;

  struct Stream;     // one gRPC stream (ADS, or RDS to one cluster) and its thread
  struct TypeState;  // per stream and type: subscription, versions, counters

 private:
  Stream& stream_for(const std::string& cluster);  // mu_ held
  void run(Stream& s);
  void on_connected(Stream& s);  // mu_ held
  // A request to send after a pause (a NACK repeated), or nothing.
  struct Deferred {
    envoy::service::discovery::v3::DiscoveryRequest request;
    std::chrono::milliseconds pause;
  };
  std::optional<Deferred> handle(Stream& s, const Update& r);
  // Subscription changes and ACK/NACK, in the stream's variant. mu_ held.
  void subscribe(Stream& s, const std::string& type, TypeState& t);
  void answer(Stream& s, const std::string& type, TypeState& t, const std::string& nonce,
              const std::string* error);
  void watchdog();

  XdsClientOptions opts_;
  ConfigSink* sink_ = nullptr;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;  // wakes backoff waits and the watchdog on stop
  std::vector<std::unique_ptr<Stream>> streams_;  // [0] is ADS
  Resources latest_;                // what the servers sent last, by type
  Digests digests_;                 // of latest_'s resources: unchanged ones keep their objects
  std::set<std::string> eds_names_;  // subscribed ClusterLoadAssignments
  bool lds_requested_ = false;
  std::thread watchdog_;
};

// Node identity as istio-agent presents a sidecar to istiod:
// id "sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local" and metadata
// NAMESPACE, CLUSTER_ID, ISTIO_VERSION, INSTANCE_IPS, SERVICE_ACCOUNT,
// NODE_NAME, POD_NAME, LABELS (a struct), plus `extra` keys verbatim.
struct NodeIdentity {
  std::string id;  // empty: built from the fields below
  std::string pod_name, namespace_, ip, cluster_id = "Kubernetes", istio_version,
      service_account, node_name;
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> extra;
};
envoy::config::core::v3::Node make_node(const NodeIdentity& n);

}  // namespace metanode::xds
