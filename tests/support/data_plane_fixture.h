// The in-process data-plane fixture: a real Server (--no-bpf, one worker
// so the per-worker state under test is deterministic) on loopback, a
// ServiceEntry on 127.0.0.1 with scripted fake Thrift upstreams, and
// blocking clients.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fake_upstream.h"
#include "local_daemon.h"
#include "metanode/core/server.h"
#include "metanode/xds/k8s_config.h"

namespace metanode::core {

using testbed::FakeUpstream;
using testbed::ThriftClient;
using Act = FakeUpstream::Act;

inline constexpr char kHost[] = "svc.ns.svc.cluster.local";

struct Endpoint {
  int port;
  std::string version;
  uint32_t weight = 0;
};

// A ServiceEntry on 127.0.0.1:`vip_port` with the given endpoints, subsets
// by version, and whatever DestinationRule/MetaRouter YAML the test adds.
inline std::string service_yaml(int vip_port, const std::vector<Endpoint>& eps) {
  std::string y =
      "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
      "metadata: {name: svc, namespace: ns}\n"
      "spec:\n  hosts: [" + std::string(kHost) + "]\n  addresses: [127.0.0.1]\n"
      "  ports: [{number: " + std::to_string(vip_port) + ", name: tcp-metaprotocol-thrift-svc}]\n"
      "  endpoints:\n";
  for (const auto& e : eps) {
    y += "  - {address: 127.0.0.1, ports: {tcp-metaprotocol-thrift-svc: " + std::to_string(e.port) +
         "}, labels: {version: " + e.version + "}";
    if (e.weight) y += ", weight: " + std::to_string(e.weight);
    y += "}\n";
  }
  return y;
}

inline std::string rule_yaml(const std::string& traffic_policy) {
  return "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
         "metadata: {name: svc, namespace: ns}\n"
         "spec:\n  host: " + std::string(kHost) + "\n" + traffic_policy +
         "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n"
         "  - {name: v3, labels: {version: v3}}\n";
}

class DataPlane : public ::testing::Test {
 protected:
  void SetUp() override { vip_port_ = testbed::free_port(); }
  void TearDown() override {
    if (server_) server_->stop();
  }

  // `edit`: changes to the translated resources (what only xDS carries).
  void configure(const std::vector<std::string>& docs,
                 const std::function<void(xds::Resources&)>& edit = nullptr) {
    std::vector<xds::ManifestFile> files;
    for (size_t i = 0; i < docs.size(); ++i) files.push_back({"f" + std::to_string(i) + ".yaml", docs[i]});
    auto res = xds::translate_manifests(files);
    ASSERT_TRUE(res) << res.error().message();
    if (edit) edit(res.value());
    auto snap = xds::build_snapshot(std::move(res.value()));
    ASSERT_TRUE(snap) << snap.error().message();
    if (!server_) {
      server_ = std::make_unique<Server>(opts_, nullptr);
      ASSERT_TRUE(server_->publish(*snap));
      ASSERT_TRUE(server_->start());
    } else {
      ASSERT_TRUE(server_->publish(*snap));
    }
  }

  uint64_t counter(Counter c) {
    uint64_t n = 0;
    for (const auto* s : server_->shards()) n += s->get(c);
    return n;
  }

  int64_t gauge(Gauge g) {
    int64_t n = 0;
    for (const auto* s : server_->shards()) n += s->get(g);
    return n;
  }

  // `n` calls on one connection; replies by server name ("" for none,
  // "exception" for an error reply).
  std::map<std::string, int> calls(int n, const std::string& method = "get",
                                   const std::string& source = "") {
    std::map<std::string, int> out;
    ThriftClient c(vip_port_, source);
    EXPECT_TRUE(c.ok());
    for (int i = 0; i < n; ++i) {
      auto r = c.call(method);
      if (!r) {
        out[""]++;
        continue;
      }
      out[r->type == 3 ? "exception" : r->text]++;
    }
    return out;
  }

  int vip_port_ = 0;
  ServerOptions opts_ = [] {
    ServerOptions o;
    o.workers = 1;
    o.request_timeout = std::chrono::milliseconds(2000);
    return o;
  }();  // a test may change them before its first configure()
  std::unique_ptr<Server> server_;
};

// Sends `n` requests at once from `n` connections and collects the replies.
inline std::map<std::string, int> concurrent_calls(int port, int n) {
  std::vector<std::unique_ptr<ThriftClient>> clients;
  for (int i = 0; i < n; ++i) {
    clients.push_back(std::make_unique<ThriftClient>(port));
    clients.back()->send_raw(testbed::thrift_message(1, "get", i + 1));
  }
  std::map<std::string, int> out;
  for (auto& c : clients) {
    auto r = c->read_reply(std::chrono::milliseconds(5000));
    out[!r ? "" : r->type == 3 ? "exception" : r->text]++;
  }
  return out;
}

}  // namespace metanode::core
