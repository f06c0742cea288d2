#include "testbed.h"

#include "metanode/sys.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace metanode::testbed {
namespace {

constexpr char kTagPrefix[] = "mnt";  // every object a testbed makes starts with this


bool write_file(const std::string& path, const std::string& v) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write(fd, v.data(), v.size()) == ssize_t(v.size());
  close(fd);
  return ok;
}

bool pid_alive(pid_t p) { return p > 0 && (kill(p, 0) == 0 || errno == EPERM); }

// Tag format: mnt<pid>x<n>; the pid says whether the owner still runs.
pid_t owner_of(const std::string& name) {
  if (name.rfind(kTagPrefix, 0) != 0) return -1;
  return pid_t(std::atol(name.c_str() + std::strlen(kTagPrefix)));
}

void remove_cgroup_tree(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> children;
  while (dirent* e = readdir(d))
    if (e->d_type == DT_DIR && e->d_name[0] != '.') children.push_back(e->d_name);
  closedir(d);
  for (const auto& c : children) remove_cgroup_tree(dir + "/" + c);
  write_file(dir + "/cgroup.kill", "1");  // kernel >= 5.14: kills every member
  for (int i = 0; i < 50 && rmdir(dir.c_str()) != 0 && errno == EBUSY; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

void remove_pins(const std::string& dir) {
  // Same effect as `metanoded --uninstall`: unpinning the links detaches.
  DIR* d = opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> entries;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') entries.push_back(e->d_name);
  closedir(d);
  for (const auto& e : entries) {
    std::string p = dir + "/" + e;
    struct stat st {};
    if (stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
      remove_pins(p);
    else
      unlink(p.c_str());
  }
  rmdir(dir.c_str());
}

}  // namespace

bool is_root() { return geteuid() == 0; }

std::string proc_status(pid_t pid, const std::string& key) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key + ":", 0) == 0) {
      auto v = line.substr(key.size() + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  return "";
}

uint64_t proc_caps(pid_t pid, const std::string& key) {
  return std::strtoull(proc_status(pid, key).c_str(), nullptr, 16);
}

long proc_rss_kib(pid_t pid) {
  std::string v = proc_status(pid, "VmRSS");
  return v.empty() ? -1 : std::stol(v);
}

int proc_fds(pid_t pid) {
  int n = 0;
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n;
}

double proc_cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto close_paren = s.rfind(')');
  if (close_paren == std::string::npos) return 0;
  std::istringstream in(s.substr(close_paren + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return double(utime + stime) / double(sysconf(_SC_CLK_TCK));
}

RunResult run(const std::vector<std::string>& argv, const std::string& netns) {
  RunResult r;
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return r;
  pid_t pid = fork();
  if (pid == 0) {
    if (!netns.empty()) {
      int fd = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) _exit(126);
    }
    dup2(pipefd[1], 1);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(pipefd[1]);
  char buf[4096];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof(buf))) > 0) r.out.append(buf, size_t(n));
  close(pipefd[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

void sweep_stale() {
  // Network namespaces.
  if (DIR* d = opendir("/run/netns")) {
    std::vector<std::string> stale;
    while (dirent* e = readdir(d)) {
      pid_t o = owner_of(e->d_name);
      if (o > 0 && !pid_alive(o)) stale.push_back(e->d_name);
    }
    closedir(d);
    for (const auto& n : stale) run({"ip", "netns", "del", n});
  }
  // cgroups and pins.
  std::string cg = sys::mount_point("cgroup2");
  for (const std::string& base : {cg, std::string("/sys/fs/bpf")}) {
    if (base.empty()) continue;
    DIR* d = opendir(base.c_str());
    if (!d) continue;
    std::vector<std::string> stale;
    while (dirent* e = readdir(d)) {
      pid_t o = owner_of(e->d_name);
      if (o > 0 && !pid_alive(o)) stale.push_back(base + "/" + e->d_name);
    }
    closedir(d);
    for (const auto& p : stale) base == cg ? remove_cgroup_tree(p) : remove_pins(p);
  }
}

// A fresh machine may have /sys/fs/bpf unmounted. Daemons of tests running
// in parallel would each mount it, stacking mounts that hide each other's
// pins; mount it once, under a lock, before any daemon starts.
Result<void> ensure_bpffs_once() {
  int lock = open("/run/metanode-testbed.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (lock < 0) return Error::errno_error("open /run/metanode-testbed.lock");
  flock(lock, LOCK_EX);
  struct statfs st {};
  Result<void> r = Ok();
  if (statfs("/sys/fs/bpf", &st) != 0 || st.f_type != BPF_FS_MAGIC) {
    mkdir("/sys/fs/bpf", 0755);
    if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0) r = Error::errno_error("mount bpffs");
  }
  close(lock);  // releases the lock
  return r;
}

Result<std::unique_ptr<Testbed>> Testbed::create(const std::string& purpose, const std::string& subnet) {
  if (!is_root()) return Error::invalid("testbed needs root (network namespaces, cgroups, BPF)");
  if (auto r = ensure_bpffs_once(); !r) return r.error();
  sweep_stale();
  static int counter = 0;
  std::unique_ptr<Testbed> tb(new Testbed());
  tb->purpose_ = purpose;
  tb->subnet_ = subnet;
  tb->tag_ = std::string(kTagPrefix) + std::to_string(getpid()) + "x" + std::to_string(counter++);
  if (auto r = tb->setup(); !r) return r.error();
  return tb;
}

Result<void> Testbed::setup() {
  std::string root = sys::mount_point("cgroup2");
  if (root.empty()) return Error::invalid("no cgroup2 mount in /proc/mounts");
  cgroup_ = root + "/" + tag_;
  for (const auto& d : {cgroup_, daemon_cgroup(), pods_cgroup()})
    if (mkdir(d.c_str(), 0755) != 0) return Error::errno_error("mkdir " + d);

  char tmpl[] = "/tmp/metanode-testbed-XXXXXX";
  if (!mkdtemp(tmpl)) return Error::errno_error("mkdtemp");
  work_dir_ = tmpl;

  std::string node = tag_ + "-node";
  auto sh = [&](const std::vector<std::string>& argv) -> Result<void> {
    auto r = run(argv);
    if (r.status != 0) {
      std::string cmd;
      for (const auto& a : argv) cmd += a + " ";
      return Error::invalid("command failed (" + std::to_string(r.status) + "): " + cmd);
    }
    return Ok();
  };
  if (auto r = sh({"ip", "netns", "add", node}); !r) return r;
  namespaces_.push_back(node);
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {"ip", "-n", node, "link", "set", "lo", "up"},
           {"ip", "-n", node, "link", "add", "br0", "type", "bridge"},
           {"ip", "-n", node, "addr", "add", node_ip() + "/24", "dev", "br0"},
           {"ip", "-n", node, "link", "set", "br0", "up"}})
    if (auto r = sh(argv); !r) return r;
  return Ok();
}

RunResult Testbed::exec(const std::vector<std::string>& argv, const std::string& netns,
                        const std::string& cgroup, int timeout_ms) {
  static int n = 0;
  std::string log = work_dir_ + "/exec-" + std::to_string(++n) + ".log";
  RunResult r;
  auto pid = procs_.spawn(argv, netns, cgroup, log);
  if (!pid) return r;
  r.status = procs_.wait(*pid, timeout_ms);
  if (r.status < 0) {
    kill(*pid, SIGKILL);
    procs_.wait(*pid, 1000);
  }
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  r.out = ss.str();
  return r;
}

Result<std::string> Testbed::add_pod(const std::string& name, int host) {
  std::string ns = tag_ + "-" + name;
  std::string node = tag_ + "-node";
  // Interface names are limited to 15 characters.
  std::string veth = "v" + std::to_string(getpid() % 100000) + "p" + std::to_string(pods_++);
  auto sh = [&](const std::vector<std::string>& argv) -> Result<void> {
    if (run(argv).status != 0) {
      std::string cmd;
      for (const auto& a : argv) cmd += a + " ";
      return Error::invalid("command failed: " + cmd);
    }
    return Ok();
  };
  if (auto r = sh({"ip", "netns", "add", ns}); !r) return r.error();
  namespaces_.push_back(ns);
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {"ip", "-n", ns, "link", "set", "lo", "up"},
           {"ip", "-n", node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
           {"ip", "-n", node, "link", "set", veth, "master", "br0", "up"},
           {"ip", "-n", ns, "addr", "add", pod_ip(host) + "/24", "dev", "eth0"},
           {"ip", "-n", ns, "link", "set", "eth0", "up"},
           {"ip", "-n", ns, "route", "add", "default", "via", node_ip()}})
    if (auto r = sh(argv); !r) return r.error();
  return ns_path(ns);
}

Result<pid_t> ProcessGroup::spawn(const std::vector<std::string>& argv, const std::string& netns,
                             const std::string& cgroup, const std::string& log) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return Error::errno_error("fork");
  if (pid == 0) {
    // Die with the test: a test killed by a timeout must not leave daemons
    // and peers running behind it.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(124);
    if (!cgroup.empty() && !write_file(cgroup + "/cgroup.procs", std::to_string(getpid()))) _exit(125);
    if (!netns.empty()) {
      int fd = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) _exit(126);
    }
    int out = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out >= 0) {
      dup2(out, 1);
      dup2(out, 2);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  pids_.push_back(pid);
  return pid;
}

int ProcessGroup::wait(pid_t pid, int timeout_ms) {
  for (int waited = 0; waited <= timeout_ms; waited += 10) {
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      for (auto& p : pids_)
        if (p == pid) p = -1;
      return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    if (r < 0) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

std::optional<std::string> http_get(const std::string& netns, const std::string& host_port,
                                    const std::string& path, int* status) {
  return http_request(netns, host_port, "GET", path, "", status);
}

std::optional<std::string> http_request(const std::string& netns, const std::string& host_port,
                                        const std::string& method, const std::string& path,
                                        const std::string& body_out, int* status) {
  std::optional<std::string> result;
  // setns() applies to the calling thread only: do the request on a thread
  // of its own so the test's namespace never changes.
  std::thread t([&] {
    if (!netns.empty()) {
      int nsfd = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
      if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) != 0) return;
      close(nsfd);
    }
    auto colon = host_port.rfind(':');
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(uint16_t(std::stoi(host_port.substr(colon + 1))));
    inet_pton(AF_INET, host_port.substr(0, colon).c_str(), &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
      close(fd);
      return;
    }
    std::string req = method + " " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
    if (!body_out.empty() || method != "GET")
      req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body_out.size()) + "\r\n";
    req += "\r\n" + body_out;
    if (write(fd, req.data(), req.size()) != ssize_t(req.size())) {
      close(fd);
      return;
    }
    std::string resp;
    char buf[8192];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) resp.append(buf, size_t(n));
    close(fd);
    auto body = resp.find("\r\n\r\n");
    if (resp.size() < 12 || body == std::string::npos) return;
    if (status) *status = std::atoi(resp.c_str() + 9);
    result = resp.substr(body + 4);
  });
  t.join();
  return result;
}

std::optional<Testbed::IfStats> Testbed::if_stats(const std::string& netns, const std::string& ifname) {
  auto r = run({"cat", "/proc/net/dev"}, netns);
  if (r.status != 0) return std::nullopt;
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    name.erase(0, name.find_first_not_of(' '));
    if (name != ifname) continue;
    std::istringstream f(line.substr(colon + 1));
    IfStats s;
    uint64_t skip;
    f >> s.rx_bytes >> s.rx_packets;
    for (int i = 0; i < 6; ++i) f >> skip;
    f >> s.tx_bytes >> s.tx_packets;
    return s;
  }
  return std::nullopt;
}

void ProcessGroup::kill_all() {
  for (pid_t p : pids_)
    if (p > 0) kill(p, SIGTERM);
  for (pid_t p : pids_) {
    if (p <= 0) continue;
    if (wait(p, 3000) < 0) {
      kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
  }
  pids_.clear();
}

Testbed::~Testbed() {
  procs_.kill_all();
  remove_pins(pin_dir());
  remove_cgroup_tree(cgroup_);
  for (auto it = namespaces_.rbegin(); it != namespaces_.rend(); ++it) run({"ip", "netns", "del", *it});
  if (!work_dir_.empty() && getenv("METANODE_KEEP_TESTBED") == nullptr)
    run({"rm", "-rf", work_dir_});
}

}  // namespace metanode::testbed
