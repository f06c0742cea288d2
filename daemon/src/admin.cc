#include "metanode/core/admin.h"

#include "fd_reserve.h"

#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <functional>
#include <thread>

namespace metanode::core {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {
const char* reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

class Session : public std::enable_shared_from_this<Session> {
 public:
  // `on_end`, if set, is handed this session's fd when it ends, shut down
  // but still open: at the fd limit the slot must never be free.
  Session(tcp::socket s, const AdminServer::Handler& h, std::function<void(int)> on_end = nullptr)
      : sock_(std::move(s)), handler_(h), on_end_(std::move(on_end)) {}
  ~Session() {
    boost::system::error_code ec;
    if (!on_end_) return;
    int fd = sock_.release(ec);
    if (ec || fd < 0) return;
    ::shutdown(fd, SHUT_RDWR);
    on_end_(fd);
  }
  void start() { read(); }

 private:
  void read() {
    sock_.async_read_some(asio::buffer(buf_), [self = shared_from_this()](auto ec, size_t n) {
      if (ec) return;
      self->req_.append(self->buf_.data(), n);
      if (self->req_.find("\r\n\r\n") == std::string::npos) {
        if (self->req_.size() > 16384) return;  // not a request we serve
        self->read();
        return;
      }
      self->respond();
    });
  }
  void respond() {
    std::string line = req_.substr(0, req_.find("\r\n"));
    auto sp1 = line.find(' ');
    auto sp2 = line.find(' ', sp1 + 1);
    AdminResponse r;
    if (sp1 == std::string::npos || sp2 == std::string::npos) {
      r = {400, "text/plain", "bad request\n"};
    } else {
      std::string path = line.substr(sp1 + 1, sp2 - sp1 - 1);
      r = handler_(line.substr(0, sp1), path);
    }
    out_ = "HTTP/1.1 " + std::to_string(r.status) + " " + reason(r.status) +
           "\r\nContent-Type: " + r.content_type +
           "\r\nContent-Length: " + std::to_string(r.body.size()) +
           "\r\nConnection: close\r\n\r\n" + r.body;
    asio::async_write(sock_, asio::buffer(out_), [self = shared_from_this()](auto, size_t) {
      boost::system::error_code ec;
      self->sock_.shutdown(tcp::socket::shutdown_both, ec);
    });
  }

  tcp::socket sock_;
  const AdminServer::Handler& handler_;
  std::function<void(int)> on_end_;
  std::array<char, 4096> buf_{};
  std::string req_, out_;
};
}  // namespace

struct AdminServer::Impl {
  net::Endpoint addr;
  Handler handler;
  // Before `io`: sessions destroyed with it may still give the reserve back.
  int reserve_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  bool stopping = false;
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  std::thread thread;

  asio::steady_timer retry{io};
  // reserve_fd: spent to answer one request at the fd limit (readiness and
  // metrics matter most then), taken back when that session ends.
  ~Impl() {
    stopping = true;
    if (reserve_fd >= 0) ::close(reserve_fd);
    reserve_fd = -1;
  }
  // The slot comes back as the ended session's own fd (no moment where
  // another thread could take it); without one, a fresh reserve if any.
  void take_reserve_back(int fd = -1) {
    if (stopping || reserve_fd >= 0) {
      if (fd >= 0) ::close(fd);
      return;
    }
    reserve_fd = fd >= 0 ? fd : ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }

  void accept() {
    acceptor.async_accept([this](const boost::system::error_code& ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) {
        std::make_shared<Session>(std::move(s), handler)->start();
        return accept();
      }
      if (ec.value() == EMFILE || ec.value() == ENFILE) {
        std::lock_guard<std::mutex> l(fd_reserve_mutex());
        if (reserve_fd >= 0) {
          ::close(reserve_fd);
          reserve_fd = -1;
          boost::system::error_code aec;
          tcp::socket one(io);
          acceptor.non_blocking(true, aec);  // never wait here if the peer gave up
          acceptor.accept(one, aec);
          if (!aec)
            std::make_shared<Session>(std::move(one), handler, [this](int fd) { take_reserve_back(fd); })->start();
          else take_reserve_back();
        } else {
          take_reserve_back();  // lost to a race before: try again
        }
      }
      // Never re-arm at once on an error: at the fd limit that spins.
      retry.expires_after(std::chrono::milliseconds(50));
      retry.async_wait([this](const boost::system::error_code& tec) {
        if (!tec) accept();
      });
    });
  }
};

AdminServer::AdminServer(net::Endpoint addr, Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->addr = addr;
  impl_->handler = std::move(handler);
}

AdminServer::~AdminServer() { stop(); }

Result<void> AdminServer::start(int adopted_fd) {
  boost::system::error_code ec;
  tcp::endpoint ep(asio::ip::address_v4(impl_->addr.addr), impl_->addr.port);
  if (adopted_fd >= 0) {
    impl_->acceptor.assign(ep.protocol(), adopted_fd, ec);
  } else {
    impl_->acceptor.open(ep.protocol(), ec);
    if (!ec) impl_->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) impl_->acceptor.bind(ep, ec);
    if (!ec) impl_->acceptor.listen(64, ec);
  }
  if (ec)
    return Error{std::error_code(ec.value(), std::system_category()),
                 "HTTP endpoint: listen on " + impl_->addr.str()};
  impl_->accept();
  impl_->thread = std::thread([this] { impl_->io.run(); });
  return Ok();
}

int AdminServer::native_handle() const { return impl_->acceptor.native_handle(); }

net::Endpoint AdminServer::bound() const {
  boost::system::error_code ec;
  auto ep = impl_->acceptor.local_endpoint(ec);
  return {ep.address().to_v4().to_uint(), ep.port()};
}

void AdminServer::stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  asio::post(impl_->io, [this] {
    boost::system::error_code ec;
    impl_->acceptor.close(ec);
    impl_->retry.cancel();
    impl_->io.stop();
  });
  impl_->thread.join();
}

}  // namespace metanode::core
