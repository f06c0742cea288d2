// metanodectl's views of a running daemon, over its admin endpoint
// (127.0.0.1:15000 by default): status, explain, clusters, config.
#include "ctl_admin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <thread>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "metanode/json.h"
#include "metanode/net.h"

namespace metanode::ctl {
namespace {

struct Reply {
  int status = 0;
  std::string body;
};

// One request on a fresh connection (the admin server closes after each).
std::optional<Reply> request(const net::Endpoint& admin, const std::string& method, const std::string& path,
                             std::string& err) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = std::strerror(errno);
    return std::nullopt;
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(admin.port);
  sa.sin_addr.s_addr = htonl(admin.addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    err = "cannot reach metanoded's admin endpoint at " + admin.str() + ": " + std::strerror(errno) +
          " (is it running? --admin ADDR)";
    close(fd);
    return std::nullopt;
  }
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: metanode\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  if (write(fd, req.data(), req.size()) != ssize_t(req.size())) {
    err = "admin endpoint: write failed";
    close(fd);
    return std::nullopt;
  }
  std::string resp;
  char buf[16384];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) resp.append(buf, size_t(n));
  close(fd);
  auto body = resp.find("\r\n\r\n");
  if (resp.rfind("HTTP/1.", 0) != 0 || resp.size() < 12 || body == std::string::npos) {
    err = "admin endpoint: not an HTTP answer";
    return std::nullopt;
  }
  return Reply{std::atoi(resp.c_str() + 9), resp.substr(body + 4)};
}

std::optional<Reply> get(const net::Endpoint& admin, const std::string& path, std::string& err) {
  return request(admin, "GET", path, err);
}

// The sum of a Prometheus family's samples whose labels contain `filter`.
uint64_t sum(const std::string& text, const std::string& name, const std::string& filter = "") {
  uint64_t total = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name, 0) != 0) continue;
    char next = line.size() > name.size() ? line[name.size()] : 0;
    if (next != ' ' && next != '{') continue;
    if (!filter.empty() && line.find(filter) == std::string::npos) continue;
    total += std::strtoull(line.c_str() + line.rfind(' ') + 1, nullptr, 10);
  }
  return total;
}
bool has(const std::string& text, const std::string& name) { return text.find("\n" + name) != std::string::npos; }

std::string url_encode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == ':') {
      out += char(c);
    } else {
      char b[4];
      std::snprintf(b, sizeof(b), "%%%02X", c);
      out += b;
    }
  }
  return out;
}

struct Options {
  net::Endpoint admin{0x7f000001, 15000};
  bool json = false;
  long timeout_ms = 30000;
  std::string src;
  std::vector<std::string> attrs;  // K=V
  std::vector<std::string> positional;
  std::string error;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        o.error = a + " needs a value";
        return "";
      }
      return argv[++i];
    };
    if (a == "--admin") {
      auto ep = net::parse_endpoint(value());
      if (!ep) o.error = "--admin: not IPv4:PORT";
      else o.admin = *ep;
    } else if (a == "-o") {
      std::string f = value();
      if (f != "json" && f != "table") o.error = "-o: json or table";
      o.json = f == "json";
    } else if (a == "--timeout-ms") {
      std::string v = value();
      char* end = nullptr;
      o.timeout_ms = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || o.timeout_ms <= 0) o.error = "--timeout-ms: a positive number";
    } else if (a == "--src") {
      o.src = value();
    } else if (a == "--attr") {
      std::string kv = value();
      if (kv.find('=') == std::string::npos || kv[0] == '=') o.error = "--attr: KEY=VALUE";
      o.attrs.push_back(kv);
    } else {
      o.positional.push_back(a);
    }
  }
  return o;
}

int fail(const std::string& why) {
  std::fprintf(stderr, "metanodectl: %s\n", why.c_str());
  return 1;
}

}  // namespace

int status(int argc, char** argv) {
  Options o = parse(argc, argv);
  if (!o.error.empty() || !o.positional.empty()) return fail(o.error.empty() ? "status takes no argument" : o.error);
  std::string err;
  auto ready = get(o.admin, "/ready", err);
  if (!ready) return fail(err);
  auto stats = get(o.admin, "/stats/prometheus", err);
  if (!stats) return fail(err);
  const std::string& m = stats->body;
  std::string detail = ready->body;
  while (!detail.empty() && detail.back() == '\n') detail.pop_back();
  uint64_t requests = sum(m, "istio_requests_total");
  uint64_t failed = requests - sum(m, "istio_requests_total", "response_flags=\"-\"");
  uint64_t clients = sum(m, "metanode_downstream_cx_active"), upstreams = sum(m, "metanode_upstream_cx_active");
  bool kube = has(m, "metanode_kube_synced");
  uint64_t enrolled = sum(m, "metanode_pods", "state=\"enrolled\""), managed = sum(m, "metanode_pod_netns", "state=\"managed\"");
  uint64_t rejected = sum(m, "metanode_config_reload_rejected_total");
  if (o.json) {
    std::printf("{\"ready\":%s,\"detail\":%s,\"requests\":%llu,\"requests_with_flags\":%llu,"
                "\"client_connections\":%llu,\"upstream_connections\":%llu,\"config_rejected\":%llu",
                ready->status == 200 ? "true" : "false", json_string(detail).c_str(), (unsigned long long)requests,
                (unsigned long long)failed, (unsigned long long)clients, (unsigned long long)upstreams,
                (unsigned long long)rejected);
    if (kube) std::printf(",\"pods_enrolled\":%llu,\"pod_netns_managed\":%llu", (unsigned long long)enrolled,
                          (unsigned long long)managed);
    std::printf("}\n");
  } else {
    std::printf("%-12s %s\n", "ready", (ready->status == 200 ? "yes" : "no: " + detail).c_str());
    std::printf("%-12s %llu answered, %llu with a response flag (no route, upstream failure, ...)\n", "requests",
                (unsigned long long)requests, (unsigned long long)failed);
    std::printf("%-12s %llu from clients, %llu to upstreams\n", "connections", (unsigned long long)clients,
                (unsigned long long)upstreams);
    std::printf("%-12s %llu rejected reloads\n", "config", (unsigned long long)rejected);
    if (kube)
      std::printf("%-12s %llu enrolled (Kubernetes API), %llu network namespaces managed\n", "pods",
                  (unsigned long long)enrolled, (unsigned long long)managed);
  }
  return ready->status == 200 ? 0 : 3;
}

int explain(int argc, char** argv) {
  Options o = parse(argc, argv);
  if (!o.error.empty() || o.positional.size() != 1) return fail(o.error.empty() ? "explain VIP:PORT" : o.error);
  std::string path = "/explain?dst=" + url_encode(o.positional[0]);
  if (!o.src.empty()) path += "&src=" + url_encode(o.src);
  for (const auto& kv : o.attrs) {
    auto eq = kv.find('=');
    path += "&attr." + url_encode(kv.substr(0, eq)) + "=" + url_encode(kv.substr(eq + 1));
  }
  if (o.json) path += "&format=json";
  std::string err;
  auto r = get(o.admin, path, err);
  if (!r) return fail(err);
  std::fputs(r->body.c_str(), r->status == 200 ? stdout : stderr);
  return r->status == 200 ? 0 : 1;
}

int drain(int argc, char** argv) {
  Options o = parse(argc, argv);
  if (!o.error.empty() || !o.positional.empty()) return fail(o.error.empty() ? "drain takes no argument" : o.error);
  std::string err;
  auto t0 = std::chrono::steady_clock::now();
  auto r = request(o.admin, "POST", "/drain", err);
  if (!r) return fail(err);
  if (r->status != 202) return fail("admin endpoint answered " + std::to_string(r->status) + ": " + r->body);
  // Until the daemon holds no client connection, or the timeout.
  uint64_t left = 0;
  bool drained = false;
  for (;;) {
    auto stats = get(o.admin, "/stats/prometheus", err);
    if (!stats) return fail(err);
    left = sum(stats->body, "metanode_downstream_cx_active");
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    if (left == 0 || ms >= o.timeout_ms) {
      drained = left == 0;
      if (o.json)
        std::printf("{\"drained\":%s,\"client_connections\":%llu,\"ms\":%lld}\n", drained ? "true" : "false",
                    (unsigned long long)left, (long long)ms);
      else if (drained)
        std::printf("drained in %lld ms: no client connection left; readiness fails, pods connect direct; "
                    "the daemon idles until it is stopped\n", (long long)ms);
      else
        std::printf("not drained after %lld ms: %llu client connections still open\n", (long long)ms,
                    (unsigned long long)left);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return drained ? 0 : 1;
}

int passthrough(int argc, char** argv, const char* path, const char* json_path) {
  Options o = parse(argc, argv);
  if (!o.error.empty() || !o.positional.empty()) return fail(o.error.empty() ? "no argument expected" : o.error);
  if (o.json && !json_path) return fail(std::string("-o json: ") + path + " has no JSON form");
  std::string err;
  auto r = get(o.admin, o.json ? json_path : path, err);
  if (!r) return fail(err);
  std::fputs(r->body.c_str(), r->status == 200 ? stdout : stderr);
  return r->status == 200 ? 0 : 1;
}

}  // namespace metanode::ctl
