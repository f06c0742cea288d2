// Loading, pinning, attaching and adopting the BPF programs, and the
// map accessors the daemon uses. Byte-order conversion between the ABI
// (network order) and net::Endpoint (host order) happens here and only here.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "metanode.skel.h"
#include "metanode/bpf/maps.h"
#include "metanode_abi.h"

namespace metanode::bpf {
namespace {

const char* const kCounterNames[] = {MN_COUNTER_NAMES};
static_assert(sizeof(kCounterNames) / sizeof(kCounterNames[0]) == MN_C__COUNT,
              "every mn_counter needs a name");

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    reset(o.release());
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int f = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = f;
  }

 private:
  int fd_ = -1;
};

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);  // the clock bpf_ktime_get_ns() reads
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

bool is_fs(const std::string& path, long magic) {
  struct statfs st {};
  return statfs(path.c_str(), &st) == 0 && st.f_type == magic;
}

std::string parent_of(const std::string& p) {
  auto slash = p.find_last_of('/');
  return slash == 0 || slash == std::string::npos ? "/" : p.substr(0, slash);
}

// Pins need a bpffs. On a fresh node /sys/fs/bpf may exist unmounted; mount
// it there (what systemd and the kubelet do) but never elsewhere.
Result<void> ensure_bpffs(const std::string& pin_dir) {
  std::string parent = parent_of(pin_dir);
  if (is_fs(parent, BPF_FS_MAGIC)) return Ok();
  if (parent != "/sys/fs/bpf")
    return Error::invalid("pin directory parent " + parent + " is not a bpffs mount");
  mkdir(parent.c_str(), 0755);
  if (mount("bpf", parent.c_str(), "bpf", 0, "mode=0700") != 0)
    return Error::errno_error("mount bpffs at " + parent);
  return Ok();
}

Result<void> mkdir_p(const std::string& dir) {
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return Error::errno_error("mkdir " + dir);
  return Ok();
}

bool exists(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0;
}

uint64_t cgroup_id_of_path(const std::string& path) {
  struct stat st {};
  // On cgroup2 the directory's inode number is the cgroup id.
  return stat(path.c_str(), &st) == 0 ? uint64_t(st.st_ino) : 0;
}

mn_tuple_key tuple_key(const sockaddr_in& src, const sockaddr_in& dst, uint64_t netns) {
  mn_tuple_key k{};
  k.saddr = src.sin_addr.s_addr;
  k.daddr = dst.sin_addr.s_addr;
  k.sport = src.sin_port;
  k.dport = dst.sin_port;
  k.netns = netns;
  return k;
}

class KernelMaps final : public Maps {
 public:
  // Takes ownership of the skeleton (may be null for open_pinned()).
  KernelMaps(metanode_bpf* skel, Fd services, Fd pods, Fd config, Fd orig, Fd tuple, Fd counters)
      : skel_(skel),
        services_(std::move(services)),
        pods_(std::move(pods)),
        config_(std::move(config)),
        orig_(std::move(orig)),
        tuple_(std::move(tuple)),
        counters_(std::move(counters)) {}
  ~KernelMaps() override {
    if (skel_) metanode_bpf__destroy(skel_);  // closes fds; pins and pinned links stay
  }

  Result<void> configure(const RuntimeConfig& c) override {
    cfg_ = {};
    cfg_.redirect_addr = htonl(c.redirect.addr);
    cfg_.redirect_port = htons(c.redirect.port);
    cfg_.flags = MN_CFG_F_ENABLED | (c.manage_all_netns ? MN_CFG_F_ALL_NETNS : 0) |
                 (c.skmsg ? MN_CFG_F_SKMSG : 0) | (c.manage_host_netns ? MN_CFG_F_HOST_NETNS : 0);
    cfg_.daemon_mark = MN_DAEMON_MARK;
    cfg_.liveness_ns = uint64_t(c.liveness.count());
    mn_config old{};
    uint32_t zero = 0;
    if (bpf_map_lookup_elem(config_.get(), &zero, &old) == 0) cfg_.generation = old.generation + 1;
    return write_config();
  }
  Result<void> heartbeat() override { return write_config(); }
  Result<void> disable() override {
    cfg_.flags &= ~MN_CFG_F_ENABLED;
    return write_config();
  }

  Result<void> upsert_service(net::Endpoint vip, uint32_t id) override {
    mn_svc_key k{htonl(vip.addr), htons(vip.port), 0};
    mn_svc_val v{MN_SVC_F_ENABLED, id};
    if (bpf_map_update_elem(services_.get(), &k, &v, BPF_ANY) != 0)
      return Error::errno_error("mn_services update " + vip.str());
    return Ok();
  }
  Result<void> remove_service(net::Endpoint vip) override {
    mn_svc_key k{htonl(vip.addr), htons(vip.port), 0};
    if (bpf_map_delete_elem(services_.get(), &k) != 0 && errno != ENOENT)
      return Error::errno_error("mn_services delete " + vip.str());
    return Ok();
  }
  Result<std::map<net::Endpoint, uint32_t>> services() override {
    std::map<net::Endpoint, uint32_t> out;
    mn_svc_key k{}, next{};
    void* prev = nullptr;
    while (bpf_map_get_next_key(services_.get(), prev, &next) == 0) {
      mn_svc_val v{};
      if (bpf_map_lookup_elem(services_.get(), &next, &v) == 0)
        out[{ntohl(next.addr), ntohs(next.port)}] = v.listener_id;
      k = next;
      prev = &k;
    }
    return out;
  }

  Result<OrigDst> original_dst(int fd) override {
    mn_orig_dst v{};
    if (bpf_map_lookup_elem(orig_.get(), &fd, &v) == 0 && (v.flags & MN_ORIG_F_ACCEPTED))
      return OrigDst{{ntohl(v.addr), ntohs(v.port)}, v.pod_netns, false};
    // Fallback: the accepted socket was not seen by sockops (daemon outside
    // the attached cgroup). The client side published its tuple; find it by
    // the same 4-tuple and consume it.
    sockaddr_in peer{}, self{};
    socklen_t pl = sizeof(peer), sl = sizeof(self);
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&self), &sl) != 0 || peer.sin_family != AF_INET)
      return Error::errno_error("original destination: socket address");
    uint64_t netns = 0;
    if ((ntohl(self.sin_addr.s_addr) >> 24) == 127) {
      socklen_t nl = sizeof(netns);
      getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &netns, &nl);
    }
    mn_tuple_key k = tuple_key(peer, self, netns);
    if (bpf_map_lookup_elem(tuple_.get(), &k, &v) != 0)
      return Error{std::make_error_code(std::errc::no_such_file_or_directory),
                   "no original destination recorded for this connection"};
    bpf_map_delete_elem(tuple_.get(), &k);
    return OrigDst{{ntohl(v.addr), ntohs(v.port)}, v.pod_netns, true};
  }

  Result<std::vector<Counter>> counters() override {
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) return Error::invalid("cannot count possible CPUs");
    std::vector<uint64_t> per_cpu(size_t(ncpu), 0);
    std::vector<Counter> out;
    for (uint32_t i = 0; i < MN_C__COUNT; ++i) {
      uint64_t sum = 0;
      if (bpf_map_lookup_elem(counters_.get(), &i, per_cpu.data()) == 0)
        for (uint64_t v : per_cpu) sum += v;
      out.push_back({kCounterNames[i], sum});
    }
    return out;
  }

 private:
  Result<void> write_config() {
    cfg_.heartbeat_ns = monotonic_ns();
    uint32_t zero = 0;
    if (bpf_map_update_elem(config_.get(), &zero, &cfg_, BPF_ANY) != 0)
      return Error::errno_error("mn_config update");
    return Ok();
  }

  metanode_bpf* skel_;
  Fd services_, pods_, config_, orig_, tuple_, counters_;
  mn_config cfg_{};
};

Fd dup_fd(int fd) { return Fd(fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

struct CgroupProg {
  bpf_program* prog;
  const char* pin;  // file name under <pin_dir>/links/
};

// Attaches `prog` to the cgroup through a pinned link. An existing pinned
// link attached to the same cgroup is switched to the new program in place
// (no moment without interception); one attached elsewhere, or left
// defunct by a removed cgroup, is detached and replaced.
Result<void> attach_pinned(bpf_program* prog, int cg_fd, uint64_t cg_id, const std::string& path) {
  if (exists(path)) {
    bpf_link* old = bpf_link__open(path.c_str());
    if (old) {
      bpf_link_info info{};
      uint32_t len = sizeof(info);
      bool same = bpf_obj_get_info_by_fd(bpf_link__fd(old), &info, &len) == 0 &&
                  info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == cg_id;
      if (same && bpf_link__update_program(old, prog) == 0) {
        bpf_link__disconnect(old);
        bpf_link__destroy(old);
        return Ok();
      }
      bpf_link_detach(bpf_link__fd(old));
      bpf_link__disconnect(old);
      bpf_link__destroy(old);
    }
    unlink(path.c_str());
  }
  bpf_link* link = bpf_program__attach_cgroup(prog, cg_fd);
  if (!link) return Error::errno_error(std::string("attach ") + bpf_program__name(prog));
  int err = bpf_link__pin(link, path.c_str());
  bpf_link__disconnect(link);  // the pin owns it now
  bpf_link__destroy(link);
  if (err) return Error::errno_error("pin link " + path, -err);
  return Ok();
}

Result<metanode_bpf*> open_and_load(const std::string& pin_dir, bool skmsg, bool getpeername) {
  metanode_bpf* skel = metanode_bpf__open();
  if (!skel) return Error::errno_error("open BPF skeleton");
  bpf_map* maps[] = {skel->maps.mn_services, skel->maps.mn_pods,    skel->maps.mn_config,
                     skel->maps.mn_orig_dst, skel->maps.mn_tuple,   skel->maps.mn_sock_hash,
                     skel->maps.mn_counters};
  for (bpf_map* m : maps) {
    std::string p = pin_dir + "/" + bpf_map__name(m);
    bpf_map__set_pin_path(m, p.c_str());
  }
  if (!getpeername) bpf_program__set_autoload(skel->progs.mn_getpeername4, false);
  if (!skmsg) bpf_program__set_autoload(skel->progs.mn_sk_msg, false);
  int err = metanode_bpf__load(skel);
  if (err) {
    metanode_bpf__destroy(skel);
    return Error::errno_error("load BPF programs (verifier or pinned-map mismatch)", -err);
  }
  return skel;
}

}  // namespace

Result<void> sync_services(Maps& maps, const std::vector<net::Endpoint>& wanted) {
  auto have = maps.services();
  if (!have) return have.error();
  std::map<net::Endpoint, uint32_t> want;
  for (size_t i = 0; i < wanted.size(); ++i) want.emplace(wanted[i], uint32_t(i + 1));
  for (const auto& [vip, id] : want) {
    auto it = have->find(vip);
    if (it != have->end() && it->second == id) continue;
    if (auto r = maps.upsert_service(vip, id); !r) return r;
  }
  for (const auto& [vip, id] : *have) {
    if (!want.count(vip))
      if (auto r = maps.remove_service(vip); !r) return r;
  }
  return Ok();
}

Result<std::unique_ptr<Maps>> install_kernel(const InstallOptions& opts) {
  std::string pin_dir = opts.pin_dir.empty() ? MN_PIN_DIR_DEFAULT : opts.pin_dir;
  if (auto r = ensure_bpffs(pin_dir); !r) return r.error();
  if (auto r = mkdir_p(pin_dir); !r) return r.error();
  if (auto r = mkdir_p(pin_dir + "/links"); !r) return r.error();

  if (!is_fs(opts.cgroup_path, CGROUP2_SUPER_MAGIC))
    return Error::invalid("--cgroup " + opts.cgroup_path + " is not a cgroup v2 directory");
  Fd cg(open(opts.cgroup_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (cg.get() < 0) return Error::errno_error("open cgroup " + opts.cgroup_path);
  uint64_t cg_id = cgroup_id_of_path(opts.cgroup_path);

  auto loaded = open_and_load(pin_dir, opts.skmsg, opts.getpeername);
  if (!loaded) {
    // Pinned maps from an incompatible earlier version cannot be reused:
    // start over rather than run half-adopted.
    if (auto u = uninstall_kernel(pin_dir); !u) return u.error();
    if (auto r = mkdir_p(pin_dir); !r) return r.error();
    if (auto r = mkdir_p(pin_dir + "/links"); !r) return r.error();
    loaded = open_and_load(pin_dir, opts.skmsg, opts.getpeername);
    if (!loaded) return loaded.error();
  }
  metanode_bpf* skel = loaded.value();

  // The verdict program must be on the sockhash before sockops can put the
  // first socket into it.
  if (opts.skmsg) {
    if (bpf_prog_attach(bpf_program__fd(skel->progs.mn_sk_msg),
                        bpf_map__fd(skel->maps.mn_sock_hash), BPF_SK_MSG_VERDICT, 0) != 0) {
      int e = errno;
      metanode_bpf__destroy(skel);
      return Error::errno_error("attach sk_msg to mn_sock_hash", e);
    }
  }
  std::vector<CgroupProg> progs = {{skel->progs.mn_sockops, "mn_sockops"},
                                   {skel->progs.mn_connect4, "mn_connect4"}};
  if (opts.getpeername) progs.push_back({skel->progs.mn_getpeername4, "mn_getpeername4"});
  for (const auto& p : progs) {
    if (auto r = attach_pinned(p.prog, cg.get(), cg_id, pin_dir + "/links/" + p.pin); !r) {
      metanode_bpf__destroy(skel);
      return r.error();
    }
  }
  // A previous install may have had getpeername4 and this one not.
  if (!opts.getpeername) {
    std::string p = pin_dir + "/links/mn_getpeername4";
    if (exists(p)) {
      int fd = bpf_obj_get(p.c_str());
      if (fd >= 0) {
        bpf_link_detach(fd);
        close(fd);
      }
      unlink(p.c_str());
    }
  }

  auto m = std::make_unique<KernelMaps>(
      skel, dup_fd(bpf_map__fd(skel->maps.mn_services)), dup_fd(bpf_map__fd(skel->maps.mn_pods)),
      dup_fd(bpf_map__fd(skel->maps.mn_config)), dup_fd(bpf_map__fd(skel->maps.mn_orig_dst)),
      dup_fd(bpf_map__fd(skel->maps.mn_tuple)), dup_fd(bpf_map__fd(skel->maps.mn_counters)));
  return std::unique_ptr<Maps>(std::move(m));
}

Result<std::unique_ptr<Maps>> open_pinned(const std::string& pin_dir) {
  auto get = [&](const char* name) { return Fd(bpf_obj_get((pin_dir + "/" + name).c_str())); };
  Fd s = get(MN_MAP_SERVICES), p = get(MN_MAP_PODS), c = get(MN_MAP_CONFIG), o = get(MN_MAP_ORIG_DST),
     t = get(MN_MAP_TUPLE), k = get(MN_MAP_COUNTERS);
  if (s.get() < 0 || p.get() < 0 || c.get() < 0 || o.get() < 0 || t.get() < 0 || k.get() < 0)
    return Error::errno_error("open pinned maps under " + pin_dir);
  return std::unique_ptr<Maps>(std::make_unique<KernelMaps>(nullptr, std::move(s), std::move(p),
                                                            std::move(c), std::move(o),
                                                            std::move(t), std::move(k)));
}

Result<void> uninstall_kernel(const std::string& pin_dir_in) {
  std::string pin_dir = pin_dir_in.empty() ? MN_PIN_DIR_DEFAULT : pin_dir_in;
  if (!exists(pin_dir)) return Ok();
  std::string links = pin_dir + "/links";
  if (DIR* d = opendir(links.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::string p = links + "/" + e->d_name;
      int fd = bpf_obj_get(p.c_str());
      if (fd >= 0) {
        // Detach explicitly: another holder of the link fd must not keep
        // the program attached after an uninstall.
        bpf_link_detach(fd);
        close(fd);
      }
      if (unlink(p.c_str()) != 0) {
        int e2 = errno;
        closedir(d);
        return Error::errno_error("unpin " + p, e2);
      }
    }
    closedir(d);
    rmdir(links.c_str());
  }
  const char* maps[] = {MN_MAP_SERVICES, MN_MAP_PODS,      MN_MAP_CONFIG,  MN_MAP_ORIG_DST,
                        MN_MAP_TUPLE,    MN_MAP_SOCK_HASH, MN_MAP_COUNTERS};
  for (const char* m : maps) {
    std::string p = pin_dir + "/" + m;
    if (unlink(p.c_str()) != 0 && errno != ENOENT) return Error::errno_error("unpin " + p);
  }
  if (rmdir(pin_dir.c_str()) != 0 && errno != ENOENT)
    return Error::errno_error("remove " + pin_dir + " (unknown files left in it?)");
  return Ok();
}

}  // namespace metanode::bpf
