#include "metanode/xds/istio_ca_client.h"

#include <grpcpp/grpcpp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>

#include "istio/security/v1alpha1/ca.grpc.pb.h"

namespace metanode::xds {
namespace {

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error::errno_error("read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using Bio = std::unique_ptr<BIO, BioDeleter>;

std::string bio_string(BIO* b) {
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  return std::string(data, size_t(n));
}

// An EC P-256 key and a CSR whose only name is the SPIFFE id, as a URI SAN
// (critical: the subject is empty), as istio-agent makes it.
Result<std::pair<std::string, std::string>> key_and_csr(const std::string& spiffe_id) {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  if (!key) return Error::invalid("CSR: cannot generate an EC P-256 key");
  std::unique_ptr<X509_REQ, decltype(&X509_REQ_free)> req(X509_REQ_new(), X509_REQ_free);
  X509_REQ_set_version(req.get(), 0);
  X509_REQ_set_pubkey(req.get(), key.get());
  std::string san = "critical,URI:" + spiffe_id;
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, san.c_str());
  if (!ext) return Error::invalid("CSR: '" + spiffe_id + "' is not a valid URI SAN");
  STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
  sk_X509_EXTENSION_push(exts, ext);
  bool ok = X509_REQ_add_extensions(req.get(), exts) == 1;
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  if (!ok || X509_REQ_sign(req.get(), key.get(), EVP_sha256()) <= 0)
    return Error::invalid("CSR: cannot sign");
  Bio kb(BIO_new(BIO_s_mem())), rb(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(kb.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  PEM_write_bio_X509_REQ(rb.get(), req.get());
  return std::pair{bio_string(kb.get()), bio_string(rb.get())};
}

// The leaf's validity, from its PEM.
Result<std::pair<std::chrono::system_clock::time_point, std::chrono::system_clock::time_point>> validity(
    const std::string& pem) {
  Bio b(BIO_new_mem_buf(pem.data(), int(pem.size())));
  std::unique_ptr<X509, decltype(&X509_free)> x(PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr), X509_free);
  if (!x) return Error::invalid("CA reply: the leaf is not a PEM certificate");
  auto to_time = [](const ASN1_TIME* t) {
    tm out{};
    ASN1_TIME_to_tm(t, &out);
    return std::chrono::system_clock::from_time_t(timegm(&out));
  };
  return std::pair{to_time(X509_get0_notBefore(x.get())), to_time(X509_get0_notAfter(x.get()))};
}

}  // namespace

Result<std::shared_ptr<grpc::ChannelCredentials>> XdsSecurity::credentials(const WorkloadCert* cert) const {
  if (!tls()) return grpc::InsecureChannelCredentials();
  auto root = read_file(root_cert_file);
  if (!root) return root.error();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = *root;
  if (cert) {
    o.pem_private_key = cert->key_pem;
    o.pem_cert_chain = cert->chain_pem;
  }
  return grpc::SslCredentials(o);
}

Result<void> XdsSecurity::authenticate(grpc::ClientContext& ctx) const {
  if (!token_file.empty()) {
    // Projected tokens rotate: read it for every connection.
    auto t = read_file(token_file);
    if (!t) return t.error();
    ctx.AddMetadata("authorization", "Bearer " + trim(*t));
  }
  // gRPC C++ takes lower-case keys only; istiod reads "clusterid".
  if (!cluster_id.empty()) ctx.AddMetadata("clusterid", cluster_id);
  return Ok();
}

IstioCaClient::IstioCaClient(Options o) : opts_(std::move(o)) {}

IstioCaClient::~IstioCaClient() { stop(); }

Result<WorkloadCert> IstioCaClient::fetch() const {
  auto kc = key_and_csr(opts_.spiffe_id);
  if (!kc) return kc.error();
  auto creds = opts_.security.credentials(nullptr);
  if (!creds) return creds.error();
  grpc::ChannelArguments args;
  if (!opts_.security.server_name.empty())
    args.SetSslTargetNameOverride(opts_.security.server_name);
  auto channel = grpc::CreateCustomChannel(opts_.address, *creds, args);
  auto stub = istio::v1::auth::IstioCertificateService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (auto r = opts_.security.authenticate(ctx); !r) return r.error();
  istio::v1::auth::IstioCertificateRequest req;
  req.set_csr(kc->second);
  req.set_validity_duration(opts_.ttl.count());
  istio::v1::auth::IstioCertificateResponse resp;
  grpc::Status st = stub->CreateCertificate(&ctx, req, &resp);
  if (!st.ok())
    return Error::invalid("Istio CA " + opts_.address + ": " + std::to_string(int(st.error_code())) + " " +
                          st.error_message());
  // Leaf first, root last; istio-agent refuses a chain without a root.
  if (resp.cert_chain_size() < 2) return Error::invalid("Istio CA reply: chain has no root");
  WorkloadCert c;
  c.key_pem = kc->first;
  for (int i = 0; i + 1 < resp.cert_chain_size(); ++i) {
    c.chain_pem += resp.cert_chain(i);
    if (!c.chain_pem.empty() && c.chain_pem.back() != '\n') c.chain_pem += '\n';
  }
  c.root_pem = resp.cert_chain(resp.cert_chain_size() - 1);
  auto v = validity(resp.cert_chain(0));
  if (!v) return v.error();
  c.not_before = v->first;
  c.not_after = v->second;
  c.received = std::chrono::system_clock::now();
  return c;
}

Result<void> IstioCaClient::start() {
  auto c = fetch();
  if (c) {
    std::lock_guard<std::mutex> l(mu_);
    cert_ = std::make_shared<WorkloadCert>(std::move(c.value()));
    spdlog::info("workload certificate for {} from {}, valid until {}s from now", opts_.spiffe_id, opts_.address,
                 std::chrono::duration_cast<std::chrono::seconds>(cert_->not_after - std::chrono::system_clock::now())
                     .count());
  }
  thread_ = std::thread([this] { run(); });
  if (!c) return c.error();
  return Ok();
}

void IstioCaClient::stop() {
  stopping_ = true;
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<const WorkloadCert> IstioCaClient::current() const {
  std::lock_guard<std::mutex> l(mu_);
  return cert_;
}

void IstioCaClient::run() {
  auto retry = std::chrono::milliseconds(500);
  std::unique_lock<std::mutex> l(mu_);
  while (!stopping_) {
    auto now = std::chrono::system_clock::now();
    auto due = now;
    if (cert_) {
      // CAs back-date not_before (for clock skew): count the lifetime from
      // when the certificate arrived.
      auto from = std::max(cert_->not_before, cert_->received);
      due = from + std::chrono::duration_cast<std::chrono::system_clock::duration>((cert_->not_after - from) *
                                                                                    opts_.renew_at);
    }
    if (due > now) {
      cv_.wait_until(l, due, [&] { return stopping_.load(); });
      continue;
    }
    l.unlock();
    auto c = fetch();
    l.lock();
    if (c) {
      cert_ = std::make_shared<WorkloadCert>(std::move(c.value()));
      retry = std::chrono::milliseconds(500);
      spdlog::info("workload certificate for {} renewed", opts_.spiffe_id);
    } else {
      spdlog::error("{}; retry in {} ms", c.error().message(), retry.count());
      cv_.wait_for(l, retry, [&] { return stopping_.load(); });
      retry = std::min(retry * 2, std::chrono::milliseconds(30000));
    }
  }
}

}  // namespace metanode::xds
