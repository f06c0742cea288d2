// /explain: what the daemon would do with a connect to `dst` from `src`
// carrying `attrs` — the kernel's decision, the listener, each route's
// verdict in order, the clusters of the one chosen and their endpoints —
// from the live snapshot and maps, without sending anything.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "metanode/codecs/codec.h"
#include "metanode/net.h"
#include "metanode/xds/snapshot.h"

namespace metanode::core {

struct ExplainQuery {
  net::Endpoint dst;
  std::optional<uint32_t> src;  // a pod's address
  codecs::Metadata attrs;       // method, interface, attachments, ...
  bool json = false;            // format=json (else text)
};

// What the kernel side knows, read by the caller (null pieces: --no-bpf).
struct KernelView {
  bool intercepting = false;  // BPF attached (not --no-bpf)
  bool all_pods = false;      // --pods all: every non-host netns is managed
  std::map<net::Endpoint, uint32_t> services;         // mn_services
  std::map<uint64_t, uint32_t> pods;                  // mn_pods
  std::vector<std::pair<uint64_t, uint16_t>> excluded;  // mn_excl
  std::optional<uint64_t> src_netns;                  // the source pod's cookie, when known
  std::string src_pod;                                // its namespace/name, when known
};

// Parses "dst=IP:PORT&src=IP&attr.method=sayHello&..." (URL-decoded
// values); an error names the parameter.
Result<ExplainQuery> parse_explain_query(const std::string& query);

std::string explain_text(const ExplainQuery& q, const xds::Snapshot* snap, const KernelView& k);
std::string explain_json(const ExplainQuery& q, const xds::Snapshot* snap, const KernelView& k);

}  // namespace metanode::core
