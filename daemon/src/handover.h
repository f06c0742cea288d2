// Hitless restart: a starting daemon takes the listening sockets of the one
// it replaces over a unix socket (SCM_RIGHTS). The kernel keeps one socket
// and one accept queue throughout, so during an upgrade no pod connect is
// refused, no queued connection is reset and interception never fails open.
//
//   successor -> predecessor  "take 1"
//   predecessor -> successor  "sockets" + one "ROLE ADDR" line per fd, with
//                             the fds (several messages), then "end"
//   successor -> predecessor  "done": it accepts on them now
//   predecessor -> successor  "conn ORIG NETNS" with one fd, for every client
//                             connection that reaches a message boundary
//                             while the predecessor drains, then "end"
//
// Until "done" both accept from the same queues; an EOF before it (the
// successor failed to start) leaves the predecessor serving as before.
// After it, the client connections follow the listening sockets: a client
// on a long-lived connection (Dubbo, Thrift) never sees it close. Its next
// request waits in the socket, which the successor reads on.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "metanode/net.h"
#include "metanode/result.h"

namespace metanode::core {

// A listening socket passed from a daemon to its successor.
struct HandedSocket {
  std::string role;    // data | admin | metrics | readiness | handover
  net::Endpoint addr;  // its bound address (0.0.0.0:0 for the handover socket)
  int fd = -1;
};
void close_all(std::vector<HandedSocket>& socks);
// Removes and returns the socket of `role` bound to `addr`, or -1.
int take_socket(std::vector<HandedSocket>& socks, const std::string& role, const net::Endpoint& addr);

// The wire (SOCK_SEQPACKET: one line of text per message, SCM_RIGHTS).
Result<void> send_sockets(int conn, const std::vector<HandedSocket>& socks);
Result<std::vector<HandedSocket>> recv_sockets(int conn, std::chrono::milliseconds timeout);

// The successor's side.
class Predecessor {
 public:
  // Connects to the daemon listening at `name` ("@NAME": Linux's abstract
  // namespace). nullopt: nobody listens there.
  static Result<std::optional<Predecessor>> find(const std::string& name);
  Predecessor(Predecessor&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Predecessor& operator=(Predecessor&&) = delete;
  ~Predecessor();
  Result<std::vector<HandedSocket>> take(std::chrono::milliseconds timeout);
  Result<void> done();
  // The connection itself, for what follows "done" (ConnectionReceiver).
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  explicit Predecessor(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// After "done", the predecessor's side: passes each client connection it
// lets go of. Called from the workers' threads (one message at a time).
class ConnectionSender {
 public:
  explicit ConnectionSender(int conn);
  ~ConnectionSender();
  // Takes `fd` (closed here either way); false when it could not be sent.
  bool pass(int fd, const net::Endpoint& orig, uint64_t netns);
  // No more: "end", and the channel closes.
  void end();

 private:
  std::mutex mu_;
  int conn_ = -1;
};

// After "done", the successor's side, on its main loop: every connection
// received goes to `adopt` (which owns the fd) until "end" or EOF.
class ConnectionReceiver {
 public:
  using Adopt = std::function<void(int fd, const net::Endpoint& orig, uint64_t netns)>;
  // `conn`: the connection to the predecessor (Predecessor::release()).
  ConnectionReceiver(boost::asio::io_context& io, int conn, Adopt adopt);
  void start() { read_next(); }

 private:
  void read_next();
  boost::asio::posix::stream_descriptor conn_;
  Adopt adopt_;
  size_t received_ = 0;
};

// A listening handover socket at `name`; a stale path is replaced.
Result<int> listen_handover(const std::string& name);

// The running daemon's side, on its main loop: answers one successor at a
// time, and only one running as this process's user (SO_PEERCRED).
class HandoverServer {
 public:
  // `provide` returns the sockets to send, as fds the server closes after.
  // `on_done` gets the connection to the successor (ConnectionSender).
  using Provide = std::function<std::vector<HandedSocket>()>;
  HandoverServer(boost::asio::io_context& io, int listen_fd, Provide provide, std::function<void(int)> on_done);
  ~HandoverServer();
  void start();
  int native_handle() { return listen_.native_handle(); }

 private:
  void accept();
  void serve(int conn);
  void read_next(int conn);
  void finish(int conn, bool done);
  boost::asio::posix::stream_descriptor listen_;
  std::optional<boost::asio::posix::stream_descriptor> conn_;
  boost::asio::steady_timer deadline_;
  Provide provide_;
  std::function<void(int)> on_done_;
};

}  // namespace metanode::core
