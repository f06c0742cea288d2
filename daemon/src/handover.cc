#include "handover.h"

#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <sstream>

namespace metanode::core {
namespace asio = boost::asio;

namespace {

constexpr size_t kBatch = 32;          // fds per message, far below SCM_MAX_FD
constexpr size_t kMaxMessage = 8192;   // 32 lines of "readiness 255.255.255.255:65535"
constexpr size_t kMaxSockets = 4096;   // workers x listeners; a bound on a peer's claims
// A successor may connect, then wait for its configuration before asking.
constexpr auto kSessionLimit = std::chrono::seconds(120);

Result<socklen_t> unix_address(const std::string& name, sockaddr_un& a) {
  a = {};
  a.sun_family = AF_UNIX;
  if (name.empty() || name.size() >= sizeof(a.sun_path))
    return Error::invalid("--handover '" + name + "': empty or longer than " +
                          std::to_string(sizeof(a.sun_path) - 1) + " bytes");
  std::memcpy(a.sun_path, name.data(), name.size());
  if (name[0] == '@') {
    a.sun_path[0] = '\0';  // abstract: no file, gone with the last socket
    return socklen_t(offsetof(sockaddr_un, sun_path) + name.size());
  }
  return socklen_t(offsetof(sockaddr_un, sun_path) + name.size() + 1);
}

// Listening sockets are handed only between daemons of one user: anyone
// else could otherwise take the pods' traffic or feed us its own sockets.
bool same_user(int fd) {
  ucred c{};
  socklen_t len = sizeof(c);
  return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len) == 0 && c.uid == geteuid();
}

Result<void> send_text(int conn, const std::string& text, const int* fds = nullptr, size_t nfds = 0) {
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kBatch)] = {};
  if (nfds) {
    m.msg_control = ctl;
    m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  if (sendmsg(conn, &m, MSG_NOSIGNAL) != ssize_t(text.size())) return Error::errno_error("handover: send");
  return Ok();
}

// One message, waiting up to `timeout`; its fds are appended to `fds`.
Result<std::string> recv_text(int conn, std::chrono::milliseconds timeout, std::vector<int>& fds) {
  pollfd p{conn, POLLIN, 0};
  int r = poll(&p, 1, int(timeout.count()));
  if (r == 0) return Error::invalid("handover: no answer within " + std::to_string(timeout.count()) + " ms");
  if (r < 0) return Error::errno_error("handover: poll");
  std::string text(kMaxMessage, '\0');
  iovec iov{text.data(), text.size()};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kBatch)];
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof(ctl);
  ssize_t n = recvmsg(conn, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0) return Error::errno_error("handover: receive");
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds.push_back(fd);
    }
  }
  if (n == 0) return Error::invalid("handover: the other daemon closed the connection");
  if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) return Error::invalid("handover: message too large");
  text.resize(size_t(n));
  return text;
}

bool known_role(const std::string& r) {
  return r == "data" || r == "admin" || r == "metrics" || r == "readiness" || r == "handover";
}

}  // namespace

void close_all(std::vector<HandedSocket>& socks) {
  for (auto& s : socks)
    if (s.fd >= 0) ::close(s.fd);
  socks.clear();
}

int take_socket(std::vector<HandedSocket>& socks, const std::string& role, const net::Endpoint& addr) {
  for (auto it = socks.begin(); it != socks.end(); ++it) {
    if (it->role != role || !(it->addr == addr)) continue;
    int fd = it->fd;
    socks.erase(it);
    return fd;
  }
  return -1;
}

Result<void> send_sockets(int conn, const std::vector<HandedSocket>& socks) {
  for (size_t i = 0; i < socks.size(); i += kBatch) {
    std::string text = "sockets\n";
    std::vector<int> fds;
    for (size_t j = i; j < socks.size() && j < i + kBatch; ++j) {
      text += socks[j].role + " " + socks[j].addr.str() + "\n";
      fds.push_back(socks[j].fd);
    }
    if (auto r = send_text(conn, text, fds.data(), fds.size()); !r) return r;
  }
  return send_text(conn, "end\n");
}

Result<std::vector<HandedSocket>> recv_sockets(int conn, std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  std::vector<HandedSocket> out;
  auto fail = [&](Error e) {
    close_all(out);
    return e;
  };
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    std::vector<int> fds;
    auto text = recv_text(conn, std::max(left, std::chrono::milliseconds(0)), fds);
    // Every fd received is owned from here, whatever the text says.
    size_t first = out.size();
    for (int fd : fds) out.push_back({"", {}, fd});
    if (!text) return fail(text.error());
    std::istringstream in(*text);
    std::string line;
    std::getline(in, line);
    if (line == "end" && fds.empty()) return out;
    if (line != "sockets") return fail(Error::invalid("handover: unexpected message '" + line + "'"));
    size_t i = first;
    while (std::getline(in, line)) {
      auto sp = line.find(' ');
      auto addr = sp == std::string::npos ? std::nullopt : net::parse_endpoint(line.substr(sp + 1));
      if (!addr || !known_role(line.substr(0, sp)) || i >= out.size())
        return fail(Error::invalid("handover: bad socket line '" + line + "'"));
      out[i].role = line.substr(0, sp);
      out[i++].addr = *addr;
    }
    if (i != out.size()) return fail(Error::invalid("handover: more sockets than lines"));
    if (out.size() > kMaxSockets) return fail(Error::invalid("handover: too many sockets"));
  }
}

// ---- the successor's side --------------------------------------------------------

Result<std::optional<Predecessor>> Predecessor::find(const std::string& name) {
  sockaddr_un a;
  auto len = unix_address(name, a);
  if (!len) return len.error();
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error::errno_error("handover: socket");
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), *len) != 0) {
    int e = errno;
    ::close(fd);
    if (e == ECONNREFUSED || e == ENOENT) return std::optional<Predecessor>();
    return Error::errno_error("handover: connect " + name, e);
  }
  if (!same_user(fd)) {
    ::close(fd);
    return Error::invalid("handover: the daemon at " + name + " runs as another user");
  }
  return std::optional<Predecessor>(Predecessor(fd));
}

Predecessor::~Predecessor() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::vector<HandedSocket>> Predecessor::take(std::chrono::milliseconds timeout) {
  if (auto r = send_text(fd_, "take 1\n"); !r) return r.error();
  return recv_sockets(fd_, timeout);
}

Result<void> Predecessor::done() { return send_text(fd_, "done\n"); }

Result<int> listen_handover(const std::string& name) {
  sockaddr_un a;
  auto len = unix_address(name, a);
  if (!len) return len.error();
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error::errno_error("handover: socket");
  // A path left by a daemon that died: nobody answered on it (find()).
  if (name[0] != '@') {
    struct stat st{};
    if (lstat(name.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(name.c_str());
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), *len) != 0 || listen(fd, 4) != 0) {
    int e = errno;
    ::close(fd);
    return Error::errno_error("handover: listen on " + name, e);
  }
  if (name[0] != '@') ::chmod(name.c_str(), 0600);
  return fd;
}

// ---- the running daemon's side -----------------------------------------------------

HandoverServer::HandoverServer(asio::io_context& io, int listen_fd, Provide provide, std::function<void(int)> on_done)
    : listen_(io, listen_fd), deadline_(io), provide_(std::move(provide)), on_done_(std::move(on_done)) {}

HandoverServer::~HandoverServer() {
  boost::system::error_code ec;
  if (conn_) conn_->close(ec);
  listen_.close(ec);
}

void HandoverServer::start() { accept(); }

void HandoverServer::accept() {
  listen_.async_wait(asio::posix::descriptor_base::wait_read, [this](const boost::system::error_code& ec) {
    if (ec) return;
    int c = accept4(listen_.native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c >= 0 && same_user(c)) {
      serve(c);
      return;  // one successor at a time: others wait in the backlog until it is gone
    }
    if (c >= 0) {
      spdlog::warn("handover: refused a connection from another user");
      ::close(c);
    }
    accept();
  });
}

void HandoverServer::serve(int c) {
  conn_.emplace(listen_.get_executor(), c);
  deadline_.expires_after(kSessionLimit);
  deadline_.async_wait([this, c](const boost::system::error_code& ec) {
    if (!ec && conn_ && conn_->native_handle() == c) {
      spdlog::warn("handover: no 'done' from the successor within {} s; serving on", kSessionLimit.count());
      finish(c, false);
    }
  });
  read_next(c);
}

void HandoverServer::read_next(int c) {
  conn_->async_wait(asio::posix::descriptor_base::wait_read, [this, c](const boost::system::error_code& ec) {
    if (ec || !conn_ || conn_->native_handle() != c) return;
    std::vector<int> stray;
    auto text = recv_text(c, std::chrono::milliseconds(0), stray);
    for (int fd : stray) ::close(fd);  // a successor sends none
    if (text && *text == "take 1\n") {
      auto socks = provide_();
      size_t n = socks.size();
      auto sent = send_sockets(c, socks);
      close_all(socks);
      if (!sent) {
        spdlog::warn("handover: {}", sent.error().message());
        return finish(c, false);
      }
      spdlog::info("handover: {} listening sockets sent to the successor", n);
      return read_next(c);
    }
    if (!text) spdlog::warn("{}; serving on", text.error().message());
    finish(c, text && *text == "done\n");
  });
}

void HandoverServer::finish(int c, bool done) {
  deadline_.cancel();
  boost::system::error_code ec;
  int kept = -1;
  if (conn_ && conn_->native_handle() == c) {
    if (done) kept = conn_->release();  // for the client connections that follow
    else conn_->close(ec);
  }
  conn_.reset();
  if (done) {
    spdlog::info("handover: the successor accepts on our sockets now");
    return on_done_(kept);  // and no more successors: the sockets are its
  }
  accept();
}

// ---- client connections, after "done" ------------------------------------------------

ConnectionSender::ConnectionSender(int conn) : conn_(conn) {
  if (conn_ < 0) return;
  // Blocking, with a bound: a worker waits at most this long for a
  // successor that stopped reading, then closes the connection instead.
  int fl = fcntl(conn_, F_GETFL);
  if (fl >= 0) fcntl(conn_, F_SETFL, fl & ~O_NONBLOCK);
  timeval tv{1, 0};
  setsockopt(conn_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

ConnectionSender::~ConnectionSender() { end(); }

bool ConnectionSender::pass(int fd, const net::Endpoint& orig, uint64_t netns) {
  bool sent = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (conn_ >= 0) {
      auto r = send_text(conn_, "conn " + orig.str() + " " + std::to_string(netns) + "\n", &fd, 1);
      if (!r) {
        spdlog::warn("{}: closing the client connections left instead", r.error().message());
        ::close(conn_);
        conn_ = -1;
      }
      sent = bool(r);
    }
  }
  ::close(fd);  // our copy; the successor's is the same socket
  return sent;
}

void ConnectionSender::end() {
  std::lock_guard<std::mutex> l(mu_);
  if (conn_ < 0) return;
  (void)send_text(conn_, "end\n");
  ::close(conn_);
  conn_ = -1;
}

ConnectionReceiver::ConnectionReceiver(asio::io_context& io, int conn, Adopt adopt)
    : conn_(io, conn), adopt_(std::move(adopt)) {}

void ConnectionReceiver::read_next() {
  conn_.async_wait(asio::posix::descriptor_base::wait_read, [this](const boost::system::error_code& ec) {
    if (ec) return;
    std::vector<int> fds;
    auto text = recv_text(conn_.native_handle(), std::chrono::milliseconds(0), fds);
    std::string line = text ? text->substr(0, text->find('\n')) : "";
    std::istringstream in(line);
    std::string word, orig;
    uint64_t netns = 0;
    in >> word >> orig >> netns;
    auto ep = net::parse_endpoint(orig);
    // Only an IPv4 TCP socket is served: anything else sent is closed.
    int type = 0, domain = 0;
    socklen_t len = sizeof(type), dlen = sizeof(domain);
    bool stream = fds.size() == 1 && getsockopt(fds[0], SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
                  type == SOCK_STREAM && getsockopt(fds[0], SOL_SOCKET, SO_DOMAIN, &domain, &dlen) == 0 &&
                  domain == AF_INET;
    if (text && word == "conn") {
      if (ep && !in.fail() && stream) {
        ++received_;
        adopt_(fds[0], *ep, netns);
      } else {
        spdlog::warn("handover: refused client connection '{}' ({} fds)", line, fds.size());
        for (int fd : fds) ::close(fd);
      }
      return read_next();
    }
    for (int fd : fds) ::close(fd);
    if (!text)
      spdlog::warn("{}, after {} client connections", text.error().message(), received_);
    else if (line == "end" && fds.empty())
      spdlog::info("handover: {} client connections taken over from the predecessor", received_);
    else
      spdlog::warn("handover: unexpected message '{}' after {} client connections", line, received_);
    boost::system::error_code ignored;
    conn_.close(ignored);
  });
}

}  // namespace metanode::core
