// The main job on one machine: Aeraki's MetaRouter tutorial for Thrift,
// without a cluster and without sidecars. A python3-thrift client pod keeps
// ONE connection to the service VIP; eBPF hands it to metanoded, which
// routes each request by the MetaRouter in force.
#include <cstdio>
#include <iostream>
#include <sstream>

#include "testbed.h"
#include "thrift_sample.h"

using namespace metanode::testbed;

namespace {

void show(const ClientSummary& s, int lines) {
  std::istringstream in(s.output);
  std::string line;
  int shown = 0;
  while (std::getline(in, line)) {
    if (line.rfind("SUMMARY", 0) == 0) continue;
    if (shown++ < lines) std::cout << "  " << line << "\n";
  }
  if (shown > lines) std::cout << "  ... (" << shown - lines << " more)\n";
  std::cout << "  => " << s.ok << "/" << s.calls << " ok;";
  for (const auto& [k, v] : s.by_method_server) std::cout << " " << k << "=" << v;
  std::cout << "\n\n";
}

}  // namespace

int main(int argc, char** argv) {
  int calls = argc > 1 ? std::atoi(argv[1]) : 1000;
  if (!is_root()) {
    std::cerr << "the demo builds network namespaces and loads eBPF: run it as root\n";
    return 2;
  }
  auto tb = Testbed::create("demo");
  if (!tb) {
    std::cerr << "testbed: " << tb.error().message() << "\n";
    return 1;
  }
  auto s = ThriftSample::start(**tb, sample_options_from_build());
  if (!s) {
    std::cerr << "sample: " << s.error().message() << "\n";
    return 1;
  }
  auto& sample = **s;
  std::cout << "node netns " << (*tb)->node_ns() << " (metanoded, redirect " << (*tb)->node_ip()
            << ":15001), client pod " << (*tb)->pod_ip(10) << ", servers v1 "
            << sample.server_ip("v1") << " and v2 " << sample.server_ip("v2") << "\n"
            << "the client connects to " << ThriftSample::kVip << ":" << ThriftSample::kPort
            << " (" << ThriftSample::kHost << ") and keeps ONE connection per scenario\n\n";

  int rc = 0;
  auto scenario = [&](const char* title, const std::string& router, const char* method, int shown) {
    std::cout << "== " << title << " ==\n";
    if (auto r = sample.set_meta_router(router); !r) {
      std::cerr << r.error().message() << "\n";
      rc = 1;
      return;
    }
    auto r = sample.run_client(calls, method, false);
    if (!r || r->status != 0) {
      std::cerr << "client failed: " << (r ? r->output : r.error().message()) << "\n";
      rc = 1;
      return;
    }
    show(*r, shown);
  };
  scenario("1. request-level load balancing (no MetaRouter: every request, same connection)", "",
           "sayHello", 6);
  scenario("2. routing by method (MetaRouter: method=sayHello -> subset v1)",
           ThriftSample::method_route_yaml(), "alternate", 6);
  scenario("3. traffic split (MetaRouter: 20% v1, 80% v2)", ThriftSample::split_route_yaml(20, 80),
           "sayHello", 10);

  auto c = sample.bpf_counters();
  std::cout << "kernel: " << c["redirected"] << " connects redirected, " << c["msg_redirect"]
            << " messages moved socket-to-socket by sk_msg\n";
  std::cout << "metrics: curl from the node netns http://127.0.0.1:15000/stats/prometheus\n";
  return rc;
}
