// netprobe: a minimal TCP peer for the kernel tests, where what matters is
// where a connection lands, not what is spoken on it.
//
//   netprobe serve --port P[,P...] --name NAME [--bind IP]
//       per connection: prints "conn PEER", reads one line, answers
//       "NAME PEER_IP:PEER_PORT\n"
//   netprobe accept --listen IP:PORT [--count N]
//       per accepted connection prints "accepted PEER orig=IP:PORT" where orig
//       comes from getsockopt(SOL_IP, SO_ORIGINAL_DST) ("none" if unanswered)
//   netprobe connect IP:PORT [--v6] [--count N] [--timeout-ms T]
//       N connections, each: send "PING\n", read one line; prints one result
//       line per connection ("reply TEXT", "closed", "error ERRNO-TEXT") and
//       "peer IP:PORT" (getpeername of the first connection)
//   netprobe churn IP:PORT --count N
//       opens and closes N connections as fast as it can; prints the count
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

std::string arg(int argc, char** argv, const char* flag, const char* def = "") {
  for (int i = 0; i + 1 < argc; ++i)
    if (!std::strcmp(argv[i], flag)) return argv[i + 1];
  return def;
}
bool has(int argc, char** argv, const char* flag) {
  for (int i = 0; i < argc; ++i)
    if (!std::strcmp(argv[i], flag)) return true;
  return false;
}

bool parse(const std::string& hp, sockaddr_in& sa) {
  auto colon = hp.rfind(':');
  if (colon == std::string::npos) return false;
  sa = {};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(std::atoi(hp.c_str() + colon + 1)));
  return inet_pton(AF_INET, hp.substr(0, colon).c_str(), &sa.sin_addr) == 1;
}

std::string str(const sockaddr_in& sa) {
  char b[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &sa.sin_addr, b, sizeof(b));
  return std::string(b) + ":" + std::to_string(ntohs(sa.sin_port));
}

std::string str6(const sockaddr_in6& sa) {
  char b[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, &sa.sin6_addr, b, sizeof(b));
  return std::string(b) + ":" + std::to_string(ntohs(sa.sin6_port));
}

int listen_on(const sockaddr_in& sa) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) != 0 || listen(fd, 4096) != 0) {
    std::perror("bind/listen");
    std::exit(1);
  }
  return fd;
}

std::string read_line(int fd, int timeout_ms) {
  std::string line;
  char c;
  while (line.size() < 512) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return line.empty() ? "\x01timeout" : line;
    ssize_t n = read(fd, &c, 1);
    if (n <= 0) return line.empty() ? "\x01closed" : line;
    if (c == '\n') return line;
    line += c;
  }
  return line;
}

int serve(int argc, char** argv) {
  std::string name = arg(argc, argv, "--name", "probe");
  std::string ports = arg(argc, argv, "--port");
  std::string bind_ip = arg(argc, argv, "--bind", "0.0.0.0");
  std::vector<std::thread> threads;
  for (size_t pos = 0; pos < ports.size();) {
    size_t comma = ports.find(',', pos);
    int port = std::atoi(ports.substr(pos, comma - pos).c_str());
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(uint16_t(port));
    inet_pton(AF_INET, bind_ip.c_str(), &sa.sin_addr);
    int lfd = listen_on(sa);
    threads.emplace_back([lfd, name] {
      for (;;) {
        sockaddr_in peer{};
        socklen_t len = sizeof(peer);
        int fd = accept4(lfd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
        if (fd < 0) continue;
        std::printf("conn %s\n", str(peer).c_str());
        std::fflush(stdout);
        std::thread([fd, peer, name] {
          read_line(fd, 1000);
          std::string reply = name + " " + str(peer) + "\n";
          (void)!write(fd, reply.data(), reply.size());
          close(fd);
        }).detach();
      }
    });
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  std::printf("listening as %s\n", name.c_str());
  std::fflush(stdout);
  for (auto& t : threads) t.join();
  return 0;
}

int accept_mode(int argc, char** argv) {
  sockaddr_in sa{};
  if (!parse(arg(argc, argv, "--listen"), sa)) return 2;
  int count = std::atoi(arg(argc, argv, "--count", "1").c_str());
  int lfd = listen_on(sa);
  std::printf("listening %s\n", str(sa).c_str());
  std::fflush(stdout);
  for (int i = 0; i < count; ++i) {
    sockaddr_in peer{};
    socklen_t len = sizeof(peer);
    int fd = accept4(lfd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
    if (fd < 0) continue;
    sockaddr_in orig{};
    socklen_t olen = sizeof(orig);
    bool ok = getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &orig, &olen) == 0;
    std::printf("accepted %s orig=%s\n", str(peer).c_str(), ok ? str(orig).c_str() : "none");
    std::fflush(stdout);
    (void)!write(fd, "accepted\n", 9);
    close(fd);
  }
  return 0;
}

int connect_mode(int argc, char** argv, const std::string& target) {
  sockaddr_in sa{};
  if (!parse(target, sa)) return 2;
  bool v6 = has(argc, argv, "--v6");
  int count = std::atoi(arg(argc, argv, "--count", "1").c_str());
  int timeout = std::atoi(arg(argc, argv, "--timeout-ms", "2000").c_str());
  for (int i = 0; i < count; ++i) {
    int fd;
    int rc;
    if (v6) {
      sockaddr_in6 s6{};
      s6.sin6_family = AF_INET6;
      s6.sin6_port = sa.sin_port;
      s6.sin6_addr.s6_addr[10] = 0xff;
      s6.sin6_addr.s6_addr[11] = 0xff;
      std::memcpy(&s6.sin6_addr.s6_addr[12], &sa.sin_addr, 4);
      fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
      rc = connect(fd, reinterpret_cast<sockaddr*>(&s6), sizeof(s6));
    } else {
      fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      timeval tv{timeout / 1000, (timeout % 1000) * 1000};
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      rc = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
    }
    if (rc != 0) {
      std::printf("error %s\n", std::strerror(errno));
      close(fd);
      continue;
    }
    if (i == 0) {
      sockaddr_storage p{};
      socklen_t len = sizeof(p);
      getpeername(fd, reinterpret_cast<sockaddr*>(&p), &len);
      std::printf("peer %s\n", p.ss_family == AF_INET6 ? str6(reinterpret_cast<sockaddr_in6&>(p)).c_str()
                                                      : str(reinterpret_cast<sockaddr_in&>(p)).c_str());
    }
    // Long enough for the daemon to decide it is not Thrift and close.
    static const char kPing[] = "PING from netprobe, not an RPC\n";
    (void)!write(fd, kPing, sizeof(kPing) - 1);
    std::string line = read_line(fd, timeout);
    if (line == "\x01closed")
      std::printf("closed\n");
    else if (line == "\x01timeout")
      std::printf("timeout\n");
    else
      std::printf("reply %s\n", line.c_str());
    close(fd);
  }
  return 0;
}

int churn(int argc, char** argv, const std::string& target) {
  sockaddr_in sa{};
  if (!parse(target, sa)) return 2;
  long count = std::atol(arg(argc, argv, "--count", "1000").c_str());
  long ok = 0, failed = 0;
  for (long i = 0; i < count; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    // RST on close: 100k TIME_WAIT sockets would exhaust the client's ports.
    linger lg{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0)
      ++ok;
    else
      ++failed;
    close(fd);
  }
  std::printf("churn ok=%ld failed=%ld\n", ok, failed);
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  std::string mode = argv[1];
  if (mode == "serve") return serve(argc, argv);
  if (mode == "accept") return accept_mode(argc, argv);
  if (mode == "connect" && argc > 2) return connect_mode(argc, argv, argv[2]);
  if (mode == "churn" && argc > 2) return churn(argc, argv, argv[2]);
  return 2;
}
