// How the daemon proves who it is to the mesh's control planes, as
// istio-agent does for a sidecar: TLS to istiod (15012) verified against the
// mesh root, the projected service-account token as a bearer token, the
// cluster id header, and a workload certificate from the Istio CA
// (istio.v1.auth.IstioCertificateService/CreateCertificate) for the ports
// that want a client certificate (Aeraki's RDS server does).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "metanode/result.h"

namespace grpc {
class ChannelCredentials;
class ClientContext;
}  // namespace grpc

namespace metanode::xds {

struct WorkloadCert {
  std::string key_pem;    // PKCS#8
  std::string chain_pem;  // the leaf, then any intermediates
  std::string root_pem;
  std::chrono::system_clock::time_point not_before, not_after, received;
};

struct XdsSecurity {
  std::string root_cert_file;  // non-empty: TLS, servers verified against this root
  std::string server_name;     // the name to verify (istiod.istio-system.svc); empty: the host
  std::string token_file;      // non-empty: "authorization: Bearer <file>", read at every connect
  std::string cluster_id;      // "clusterid" header, when non-empty

  bool tls() const { return !root_cert_file.empty(); }
  // Credentials for one connection; `cert` (may be null) is presented as the
  // client certificate.
  Result<std::shared_ptr<grpc::ChannelCredentials>> credentials(const WorkloadCert* cert) const;
  // Adds the headers to a call.
  Result<void> authenticate(grpc::ClientContext& ctx) const;
};

class IstioCaClient {
 public:
  struct Options {
    std::string address;  // HOST:PORT (istiod 15012)
    XdsSecurity security;
    std::string spiffe_id;  // spiffe://<trust domain>/ns/<ns>/sa/<sa>, put in the CSR
    std::chrono::seconds ttl{24 * 3600};
    double renew_at = 0.5;  // of the lifetime, as istio-agent's SECRET_GRACE_PERIOD_RATIO
  };
  explicit IstioCaClient(Options o);
  ~IstioCaClient();

  // A new key, a CSR for it, signed by the CA. Blocking.
  Result<WorkloadCert> fetch() const;
  // Fetches now, then renews at `renew_at` of each certificate's lifetime
  // (retrying with backoff). A CA that is away at start is retried too; the
  // error is returned for the log.
  Result<void> start();
  void stop();
  std::shared_ptr<const WorkloadCert> current() const;

 private:
  void run();
  Options opts_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<const WorkloadCert> cert_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace metanode::xds
