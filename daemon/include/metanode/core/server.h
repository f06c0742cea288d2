// The data plane: one event loop per worker thread, each with its own
// acceptors (SO_REUSEPORT), downstream connections, upstream connection pools,
// load-balancer state and stats shard. Workers share nothing but the
// configuration snapshot, which they pick up without a lock.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "metanode/bpf/maps.h"
#include "metanode/codecs/codec.h"
#include "metanode/core/peers.h"
#include "metanode/core/stats.h"
#include "metanode/net.h"
#include "metanode/result.h"
#include "metanode/xds/snapshot.h"

namespace metanode::core {

class AccessLog;

// What one client connection may hold and how long it may take. One daemon
// serves every pod on the node: each bound keeps one client from growing the
// daemon or pinning its resources at the others' expense.
struct DownstreamLimits {
  size_t max_inflight = 1024;  // requests awaiting a reply; reads pause beyond
  // Reply bytes queued and not yet taken by the client: reads pause beyond
  // `pause_queued_bytes`; a reply that would take the connection beyond
  // `max_queued_bytes` (or the worker beyond `max_queued_bytes_per_worker`)
  // is answered with an error instead, so a client that does not read can
  // never grow the daemon.
  size_t pause_queued_bytes = size_t(4) << 20;  // 1/8 of max_queued_bytes
  size_t max_queued_bytes = size_t(32) << 20;
  size_t max_queued_bytes_per_worker = size_t(256) << 20;
  // A message started must be complete within this (slowloris).
  std::chrono::milliseconds read_timeout{15000};
  // Nothing in flight, nothing read or written for this long: closed.
  std::chrono::milliseconds idle_timeout{3600000};
  // Replies queued and not a byte taken by the client for this long: closed.
  std::chrono::milliseconds write_timeout{30000};
  // Per client source (address) across the node: connections beyond
  // `max_connections_per_source` are closed at accept; beyond
  // `max_pending_per_source` requests awaiting replies its reads pause;
  // beyond `max_rps_per_source` (0: none) requests per second its reads
  // wait for the rate (a second's burst).
  uint32_t max_connections_per_source = 4096;
  uint32_t max_pending_per_source = 1024;
  uint32_t max_rps_per_source = 0;
};

struct ServerOptions {
  size_t workers = 0;  // 0: one per core
  // Interception mode: accept on `redirect` and learn each connection's
  // original destination from the BPF maps. Otherwise (--no-bpf) bind every
  // listener address directly.
  bool intercept = false;
  net::Endpoint redirect;
  std::chrono::milliseconds request_timeout{30000};
  size_t max_upstream_conns = 2;      // per endpoint per worker
  DownstreamLimits downstream;
  codecs::Limits limits;
  AccessLog* access_log = nullptr;  // one line per answered request when set (owned by the caller)
};

class Server {
 public:
  Server(ServerOptions opts, bpf::Maps* maps);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Publishes a configuration; safe from any thread but a worker's. In
  // --no-bpf mode after start(), returns once every worker has bound the new
  // listener set: the first address that could not be bound is the error
  // (the rest of the configuration is live regardless).
  Result<void> publish(std::shared_ptr<const xds::Snapshot> snap);
  std::shared_ptr<const xds::Snapshot> snapshot() const;
  // Publishes who the clients are; connections accepted from now on use it.
  void set_peers(std::shared_ptr<const PeerTable> peers);
  std::shared_ptr<const PeerTable> peers() const;

  // Listening sockets handed over by the daemon this one replaces
  // (handover.h), as (address, fd): start() accepts on those of the
  // addresses it listens on instead of binding new ones, and closes the rest.
  void inherit(std::vector<std::pair<net::Endpoint, int>> sockets);
  Result<void> start();
  // Copies (dup) of every listening socket, for a successor.
  std::vector<std::pair<net::Endpoint, int>> listening_sockets();
  // Graceful stop, first half: accept no more connections, close idle
  // client connections, let the others finish the calls they have in
  // flight (no new request is read) and close. Returns true once no client
  // connection is left, false at `deadline` with some still open. With
  // `handed_over` the listening sockets are a successor's: they are let go
  // of, not emptied (their queued connections are its now).
  // `handoff` (after a handover): takes each client connection that
  // reaches a message boundary (nothing in flight, no reply queued, no
  // partial request read) instead of it being closed; called from the
  // workers' threads, owns the fd, false when it could not pass it on.
  using ConnectionHandoff = std::function<bool(int fd, const net::Endpoint& orig, uint64_t netns)>;
  bool drain(Clock::time_point deadline, bool handed_over = false, ConnectionHandoff handoff = {});
  // The first half of drain(), without the wait (metanodectl drain);
  // client_connections() tells how far it got.
  void begin_drain(bool handed_over = false, ConnectionHandoff handoff = {});
  int64_t client_connections() const;
  // A client connection a predecessor handed over: served from here as
  // if accepted, for its original destination `orig` (owns the fd).
  void adopt(int fd, const net::Endpoint& orig, uint64_t netns);
  void stop();
  bool ready() const;  // started and not draining (configuration readiness is the source's)

  std::vector<const StatsShard*> shards() const;
  StatsShard& control_stats();
  // Envoy-like /clusters text: every cluster, endpoint and its request count.
  std::string clusters_text() const;
  // The same as JSON: {"clusters":[{"name","lb_policy","endpoints":[{"address",
  // "weight","rq_total","healthy","failed_outlier_check",
  // "reconnect_backoff_workers","labels"}]}]}.
  std::string clusters_json() const;

  struct Impl;  // public name so the workers in server.cc can refer to it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace metanode::core
