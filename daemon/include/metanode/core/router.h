// Per-request decisions that need no connection state: which route, which
// cluster of a weighted split, and the request's consistent-hash key. Pure
// functions over the immutable snapshot, unit-tested without sockets.
// Choosing the endpoint is the load balancer's (lb/) over the cluster
// manager's host state.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "metanode/codecs/codec.h"
#include "metanode/net.h"
#include "metanode/xds/snapshot.h"

namespace metanode::core {

// Whether every matcher holds for `md` (true for none): the AND of a route
// match, a rate limit condition or a global rate limit's match.
bool matches_all(const std::vector<xds::AttributeMatcher>& match, const codecs::Metadata& md);

// First route whose matchers all hold; nullptr if none.
const xds::Route* match_route(const xds::RouteTable& table, const codecs::Metadata& md);

// Weighted choice: `draw` uniform in [0, 2^64). Clusters are chosen with
// probability weight / total_weight.
const xds::ClusterRef* pick_cluster(const xds::Route& route, uint64_t draw);

// The consistent-hash key of a request: its hash attributes (those it
// carries) and, if the route says so, the client's address. nullopt when
// the route does not hash or the request carries none of the attributes.
std::optional<uint64_t> request_hash(const xds::Route& route, const codecs::Metadata& md,
                                     net::Endpoint source);

}  // namespace metanode::core
