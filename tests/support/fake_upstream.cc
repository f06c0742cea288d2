#include "fake_upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "local_daemon.h"

namespace metanode::testbed {
namespace {

void put32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s.push_back(char((v >> (8 * i)) & 0xff));
}
uint32_t get32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = v << 8 | uint8_t(s[at + i]);
  return v;
}

bool read_full(int fd, char* p, size_t n, int timeout_ms) {
  while (n > 0) {
    if (timeout_ms >= 0) {
      pollfd pfd{fd, POLLIN, 0};
      if (poll(&pfd, 1, timeout_ms) <= 0) return false;
    }
    ssize_t r = ::read(fd, p, n);
    if (r <= 0) return false;
    p += r;
    n -= size_t(r);
  }
  return true;
}

std::optional<std::string> read_frame(int fd, int timeout_ms) {
  char len[4];
  if (!read_full(fd, len, 4, timeout_ms)) return std::nullopt;
  uint32_t n = get32(std::string(len, 4), 0);
  if (n > (16u << 20)) return std::nullopt;
  std::string body(n, '\0');
  if (!read_full(fd, body.data(), n, timeout_ms)) return std::nullopt;
  return std::string(len, 4) + body;
}

bool write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t w = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (w <= 0) return false;
    off += size_t(w);
  }
  return true;
}

}  // namespace

std::string thrift_message(uint8_t type, const std::string& method, int32_t seqid,
                           const std::string& result) {
  std::string body;
  put32(body, 0x80010000u | type);
  put32(body, uint32_t(method.size()));
  body += method;
  put32(body, uint32_t(seqid));
  if (type == 3) {
    // TApplicationException { 1: string message, 2: i32 type (6: internal error) }
    body += char(11);
    body += std::string("\0\1", 2);
    put32(body, uint32_t(result.size()));
    body += result;
    body += char(8);
    body += std::string("\0\2", 2);
    put32(body, 6);
  } else if (type == 2) {
    body += char(11);  // field 0 (success): string
    body += std::string("\0\0", 2);
    put32(body, uint32_t(result.size()));
    body += result;
  }
  body += char(0);  // stop
  std::string frame;
  put32(frame, uint32_t(body.size()));
  return frame + body;
}

std::optional<ThriftReply> parse_thrift(const std::string& f) {
  if (f.size() < 16) return std::nullopt;
  ThriftReply r;
  uint32_t ver = get32(f, 4);
  if ((ver & 0xffff0000u) != 0x80010000u) return std::nullopt;
  r.type = uint8_t(ver & 0xff);
  uint32_t n = get32(f, 8);
  if (12 + n + 4 > f.size()) return std::nullopt;
  r.method = f.substr(12, n);
  r.seqid = int32_t(get32(f, 12 + n));
  size_t p = 16 + n;
  // The first string field, if any (reply success value or exception message).
  if (p + 7 <= f.size() && f[p] == 11) {
    uint32_t len = get32(f, p + 3);
    if (p + 7 + len <= f.size()) r.text = f.substr(p + 7, len);
  }
  return r;
}

FakeUpstream::FakeUpstream(std::string name, Script script)
    : name_(std::move(name)), script_(std::move(script)) {
  listen_fd_ = bind_loopback(port_);
  listen(listen_fd_, 128);
  acceptor_ = std::thread([this] { accept_loop(); });
}

FakeUpstream::~FakeUpstream() {
  stop_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  acceptor_.join();
  ::close(listen_fd_);
  {
    std::lock_guard<std::mutex> l(mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : threads_) t.join();
}

void FakeUpstream::set_script(Script s) {
  std::lock_guard<std::mutex> l(mu_);
  script_ = std::move(s);
}

void FakeUpstream::accept_loop() {
  while (!stop_) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    ++connections_;
    ++open_;
    std::lock_guard<std::mutex> l(mu_);
    fds_.push_back(fd);
    threads_.emplace_back([this, fd] { serve(fd); });
  }
}

void FakeUpstream::serve(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  while (!stop_) {
    auto f = read_frame(fd, -1);
    if (!f) break;
    auto req = parse_thrift(*f);
    if (!req) break;
    ++requests_;
    Action a;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (script_) a = script_(req->method);
    }
    if (a.delay.count() > 0) std::this_thread::sleep_for(a.delay);
    if (a.act == Act::kClose) break;
    if (a.act == Act::kSilent || req->type == 4) continue;
    std::string text = name_;
    if (text.size() < a.reply_bytes) text.resize(a.reply_bytes, '.');
    std::string out = a.act == Act::kException
                          ? thrift_message(3, req->method, req->seqid, name_ + " failed")
                          : thrift_message(2, req->method, req->seqid, text);
    // No Thrift form starts so: not a frame length, a protocol version
    // or a plausible name length.
    if (a.act == Act::kGarbage) out = "HTTP/1.1 200 OK\r\n\r\n";
    if (a.act == Act::kReplyTwice) out += out;  // the second one matches nothing
    if (!write_all(fd, out)) break;
  }
  --open_;
  // Unlisted before closing, so the destructor never shuts down a number
  // that has been reused.
  std::lock_guard<std::mutex> l(mu_);
  for (auto& x : fds_)
    if (x == fd) x = -1;
  ::close(fd);
}

ThriftClient::ThriftClient(int port, const std::string& source) {
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (!source.empty()) {
    sockaddr_in src{};
    src.sin_family = AF_INET;
    inet_pton(AF_INET, source.c_str(), &src.sin_addr);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
      ::close(fd_);
      fd_ = -1;
      return;
    }
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

ThriftClient::~ThriftClient() {
  if (fd_ >= 0) ::close(fd_);
}

bool ThriftClient::send_raw(const std::string& bytes) { return fd_ >= 0 && write_all(fd_, bytes); }

std::optional<ThriftReply> ThriftClient::read_reply(std::chrono::milliseconds wait) {
  if (fd_ < 0) return std::nullopt;
  auto f = read_frame(fd_, int(wait.count()));
  if (!f) return std::nullopt;
  return parse_thrift(*f);
}

bool ThriftClient::wait_closed(std::chrono::milliseconds wait) {
  if (fd_ < 0) return true;
  auto until = std::chrono::steady_clock::now() + wait;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pfd{fd_, POLLIN, 0};
    if (poll(&pfd, 1, int(left.count())) <= 0) return false;
    ssize_t r = ::read(fd_, buf, sizeof buf);
    if (r <= 0) return true;
  }
}

std::optional<ThriftReply> ThriftClient::call(const std::string& method,
                                              std::chrono::milliseconds wait) {
  if (!send_raw(thrift_message(1, method, ++seq_))) return std::nullopt;
  return read_reply(wait);
}

}  // namespace metanode::testbed
