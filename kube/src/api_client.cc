#include "metanode/kube/api_client.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>

namespace metanode::kube {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {
constexpr char kServiceAccountDir[] = "/var/run/secrets/kubernetes.io/serviceaccount";

Result<std::string> read_token(const std::string& path) {
  std::ifstream f(path);
  if (!f) return Error::errno_error("read token " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string t = ss.str();
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  if (t.empty()) return Error::invalid("token file " + path + " is empty");
  return t;
}
}  // namespace

Result<ApiConfig> ApiConfig::in_cluster() {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (!host || !*host)
    return Error::invalid("not in a pod: KUBERNETES_SERVICE_HOST is not set (pass --kube-api URL)");
  ApiConfig c;
  c.host = host;
  if (port && *port) {
    char* end = nullptr;
    long p = std::strtol(port, &end, 10);
    if (*end || p <= 0 || p > 65535) return Error::invalid(std::string("KUBERNETES_SERVICE_PORT=") + port);
    c.port = uint16_t(p);
  }
  c.ca_file = std::string(kServiceAccountDir) + "/ca.crt";
  c.token_file = std::string(kServiceAccountDir) + "/token";
  return c;
}

Result<ApiConfig> ApiConfig::from_url(const std::string& url) {
  ApiConfig c;
  std::string rest;
  if (url.rfind("https://", 0) == 0) {
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
    c.tls = false;
    c.port = 80;
  } else {
    return Error::invalid("API server URL " + url + ": not https:// or http://");
  }
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.find('/') != std::string::npos) return Error::invalid("API server URL " + url + ": no path allowed");
  std::string port;
  if (!rest.empty() && rest[0] == '[') {  // [v6]:port
    auto close = rest.find(']');
    if (close == std::string::npos) return Error::invalid("API server URL " + url + ": unclosed [");
    c.host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') port = rest.substr(close + 2);
  } else {
    auto colon = rest.rfind(':');
    c.host = rest.substr(0, colon);
    if (colon != std::string::npos) port = rest.substr(colon + 1);
  }
  if (c.host.empty()) return Error::invalid("API server URL " + url + ": no host");
  if (!port.empty()) {
    char* end = nullptr;
    long p = std::strtol(port.c_str(), &end, 10);
    if (*end || p <= 0 || p > 65535) return Error::invalid("API server URL " + url + ": bad port");
    c.port = uint16_t(p);
  }
  return c;
}

std::string ApiConfig::url() const {
  bool v6 = host.find(':') != std::string::npos;
  return std::string(tls ? "https://" : "http://") + (v6 ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

Result<std::shared_ptr<asio::ssl::context>> make_tls_context(const ApiConfig& cfg) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1);
  boost::system::error_code ec;
  if (cfg.ca_file.empty()) ctx->set_default_verify_paths(ec);
  else ctx->load_verify_file(cfg.ca_file, ec);
  if (ec) return Error::invalid("API server CA " + cfg.ca_file + ": " + ec.message());
  ctx->set_verify_mode(asio::ssl::verify_peer);
  return ctx;
}

// One GET: resolve, connect, TLS, request, then the body as it arrives.
struct HttpTransport::Exchange : std::enable_shared_from_this<Exchange> {
  Exchange(asio::io_context& io, std::shared_ptr<asio::ssl::context> tls_ctx, ApiConfig c, std::string t,
           ResponseHandler handler, std::chrono::seconds idle_timeout)
      : cfg(std::move(c)), tls(std::move(tls_ctx)), target(std::move(t)), h(std::move(handler)),
        idle(idle_timeout), resolver(io) {
    if (tls) secure.emplace(io, *tls);
    else plain.emplace(io);
  }

  ApiConfig cfg;
  std::shared_ptr<asio::ssl::context> tls;  // outlives the stream that uses it
  std::string target;
  ResponseHandler h;
  std::chrono::seconds idle;
  tcp::resolver resolver;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buf;
  http::request<http::empty_body> req;
  http::response_parser<http::buffer_body> parser;
  char chunk[16384];
  bool done = false, cancelled = false;

  beast::tcp_stream& lowest() { return secure ? beast::get_lowest_layer(*secure) : *plain; }
  template <class F>
  void with_stream(F&& f) {
    if (secure) f(*secure);
    else f(*plain);
  }

  void start() {
    req = {http::verb::get, target, 11};
    req.set(http::field::host, cfg.host);
    req.set(http::field::user_agent, "metanoded");
    req.set(http::field::accept, "application/json");
    if (!cfg.token_file.empty()) {
      auto token = read_token(cfg.token_file);
      if (!token) return finish(token.error());
      req.set(http::field::authorization, "Bearer " + *token);
    }
    // No body limit: the caller bounds what it keeps; a watch is unbounded.
    parser.body_limit(boost::none);
    resolver.async_resolve(cfg.host, std::to_string(cfg.port),
                           [self = shared_from_this()](boost::system::error_code ec, tcp::resolver::results_type r) {
                             if (ec) return self->finish(Error::invalid("resolve " + self->cfg.host + ": " + ec.message()));
                             self->connect(r);
                           });
  }

  void connect(const tcp::resolver::results_type& r) {
    lowest().expires_after(cfg.connect_timeout);
    lowest().async_connect(r, [self = shared_from_this()](boost::system::error_code ec, const tcp::endpoint&) {
      if (ec) return self->finish(Error::invalid("connect " + self->cfg.url() + ": " + ec.message()));
      if (!self->secure) return self->write();
      self->handshake();
    });
  }

  void handshake() {
    SSL* ssl = secure->native_handle();
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    boost::system::error_code ec;
    (void)asio::ip::make_address(cfg.host, ec);
    if (!ec) {
      X509_VERIFY_PARAM_set1_ip_asc(param, cfg.host.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl, cfg.host.c_str());
      X509_VERIFY_PARAM_set1_host(param, cfg.host.c_str(), 0);
    }
    secure->async_handshake(asio::ssl::stream_base::client, [self = shared_from_this()](boost::system::error_code hec) {
      if (hec) return self->finish(Error::invalid("TLS with " + self->cfg.url() + ": " + hec.message()));
      self->write();
    });
  }

  void write() {
    lowest().expires_after(cfg.connect_timeout);
    with_stream([this](auto& s) {
      http::async_write(s, req, [self = shared_from_this()](boost::system::error_code ec, size_t) {
        if (ec) return self->finish(Error::invalid("send to " + self->cfg.url() + ": " + ec.message()));
        self->read_header();
      });
    });
  }

  void read_header() {
    lowest().expires_after(idle);
    with_stream([this](auto& s) {
      http::async_read_header(s, buf, parser, [self = shared_from_this()](boost::system::error_code ec, size_t) {
        if (ec) return self->finish(Error::invalid("response from " + self->cfg.url() + ": " + ec.message()));
        if (self->cancelled) return;
        if (self->h.on_status) self->h.on_status(int(self->parser.get().result_int()));
        self->read_body();
      });
    });
  }

  void read_body() {
    if (cancelled) return;
    if (parser.is_done()) return finish(Ok());
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof(chunk);
    lowest().expires_after(idle);
    with_stream([this](auto& s) {
      http::async_read_some(s, buf, parser, [self = shared_from_this()](boost::system::error_code ec, size_t) {
        if (ec == http::error::need_buffer) ec = {};
        size_t n = sizeof(self->chunk) - self->parser.get().body().size;
        if (n && !self->cancelled && !self->h.on_data(std::string_view(self->chunk, n)))
          return self->finish(Error::invalid("stopped by the reader"));
        if (ec == http::error::end_of_stream && self->parser.is_done()) ec = {};
        if (ec) return self->finish(Error::invalid("reading from " + self->cfg.url() + ": " + ec.message()));
        self->read_body();
      });
    });
  }

  void close() {
    boost::system::error_code ec;
    resolver.cancel();
    lowest().socket().close(ec);
  }

  void finish(Result<void> r) {
    if (done) return;
    done = true;
    close();
    if (cancelled) return;
    // Later, not from inside this exchange's handler: on_done may start the
    // next request on the same transport.
    asio::post(resolver.get_executor(), [self = shared_from_this(), r = std::move(r)]() mutable {
      if (!self->cancelled && self->h.on_done) self->h.on_done(std::move(r));
    });
  }
};

namespace {
std::string file_stamp(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return "";
  return std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) +
         "." + std::to_string(st.st_mtim.tv_nsec);
}
}  // namespace

HttpTransport::HttpTransport(asio::io_context& io, std::shared_ptr<asio::ssl::context> tls, ApiConfig cfg)
    : io_(io), tls_(std::move(tls)), cfg_(std::move(cfg)) {
  if (cfg_.tls && !cfg_.ca_file.empty()) ca_stamp_ = file_stamp(cfg_.ca_file);
}

HttpTransport::~HttpTransport() { cancel(); }

void HttpTransport::refresh_ca() {
  if (!cfg_.tls || cfg_.ca_file.empty()) return;
  std::string stamp = file_stamp(cfg_.ca_file);
  if (stamp.empty() || stamp == ca_stamp_) return;
  ca_stamp_ = stamp;
  auto ctx = make_tls_context(cfg_);
  if (!ctx) {
    spdlog::error("Kubernetes API: {}; keeping the CA read before", ctx.error().message());
    return;
  }
  spdlog::info("Kubernetes API: CA {} changed, read again", cfg_.ca_file);
  tls_ = std::move(ctx.value());
}

void HttpTransport::get(const std::string& target, ResponseHandler h) {
  cancel();
  refresh_ca();
  current_ = std::make_shared<Exchange>(io_, cfg_.tls ? tls_ : nullptr, cfg_, target, std::move(h), idle_);
  auto ex = current_;
  asio::post(io_, [ex] {
    if (!ex->cancelled) ex->start();
  });
}

void HttpTransport::cancel() {
  if (!current_) return;
  current_->cancelled = true;
  current_->close();
  current_.reset();
}

}  // namespace metanode::kube
