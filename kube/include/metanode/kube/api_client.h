// Where the Kubernetes API server is and how to prove who we are to it, and
// the HTTP(S) transport the reflectors use (Boost.Beast over Asio).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "metanode/kube/transport.h"
#include "metanode/result.h"

namespace metanode::kube {

struct ApiConfig {
  std::string host;  // IP literal or DNS name
  uint16_t port = 443;
  bool tls = true;
  std::string ca_file;     // verifies the server; empty with tls: the system's roots
  std::string token_file;  // "Authorization: Bearer"; re-read for every request (the
                           // kubelet rotates projected tokens); empty: none
  std::chrono::seconds connect_timeout{10};

  // Inside a pod: KUBERNETES_SERVICE_HOST/PORT and the service account's
  // mounted token and CA.
  static Result<ApiConfig> in_cluster();
  // "https://HOST:PORT" or "http://HOST:PORT" (labs and tests).
  static Result<ApiConfig> from_url(const std::string& url);
  std::string url() const;
};

// One request at a time, a new connection each (a watch holds its
// connection for minutes; lists are rare). The TLS context is shared by the
// transports of one daemon until the CA file changes: the service account's
// ca.crt is a projected file the kubelet replaces when the cluster's CA
// rotates, so each request first checks it (one stat) and, changed, reads
// it into a new context (a file that does not load is reported once and the
// last good CA kept).
class HttpTransport : public Transport {
 public:
  HttpTransport(boost::asio::io_context& io, std::shared_ptr<boost::asio::ssl::context> tls,
                ApiConfig cfg);
  ~HttpTransport() override;
  void get(const std::string& target, ResponseHandler h) override;
  void cancel() override;

  // The read timeout of a request: a watch that gets no byte for this long
  // (the server sends bookmarks) is taken as dead.
  void set_idle_timeout(std::chrono::seconds s) { idle_ = s; }

  struct Exchange;

 private:
  void refresh_ca();
  boost::asio::io_context& io_;
  std::shared_ptr<boost::asio::ssl::context> tls_;
  ApiConfig cfg_;
  std::string ca_stamp_;  // inode, size and mtime of the CA file tls_ was made from
  std::chrono::seconds idle_{360};
  std::shared_ptr<Exchange> current_;
};

// A client TLS context that trusts cfg.ca_file (or the system's roots).
Result<std::shared_ptr<boost::asio::ssl::context>> make_tls_context(const ApiConfig& cfg);

}  // namespace metanode::kube
