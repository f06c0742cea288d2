// Loading, pinning, attaching and adopting the BPF programs, and the
// map accessors the daemon uses. Byte-order conversion between the ABI
// (network order) and net::Endpoint (host order) happens here and only here.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <sched.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "map_layout.h"
#include "metanode.skel.h"
#include "metanode/bpf/maps.h"
#include "metanode/sys.h"
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
  struct Fds {
    Fd services, pods, config, orig, tuple, counters, excl, sockhash;
  };
  KernelMaps(metanode_bpf* skel, Fds fds) : skel_(skel), f_(std::move(fds)) {}
  ~KernelMaps() override {
    if (skel_) metanode_bpf__destroy(skel_);  // closes fds; pins and pinned links stay
  }

  Result<void> configure(const RuntimeConfig& c) override {
    cfg_ = {};
    cfg_.redirect_addr = htonl(c.redirect.addr);
    cfg_.redirect_port = htons(c.redirect.port);
    cfg_.flags = MN_CFG_F_ENABLED | (c.manage_all_netns ? MN_CFG_F_ALL_NETNS : 0) |
                 (c.skmsg ? MN_CFG_F_SKMSG : 0) | (c.manage_host_netns ? MN_CFG_F_HOST_NETNS : 0) |
                 (c.skmsg && c.skmsg_upstream ? MN_CFG_F_SKMSG_UPSTREAM : 0);
    cfg_.daemon_mark = MN_DAEMON_MARK;
    cfg_.liveness_ns = uint64_t(c.liveness.count());
    mn_config old{};
    uint32_t zero = 0;
    if (bpf_map_lookup_elem(f_.config.get(), &zero, &old) == 0) cfg_.generation = old.generation + 1;
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
    if (bpf_map_update_elem(f_.services.get(), &k, &v, BPF_ANY) != 0)
      return Error::errno_error("mn_services update " + vip.str());
    return Ok();
  }
  Result<void> remove_service(net::Endpoint vip) override {
    mn_svc_key k{htonl(vip.addr), htons(vip.port), 0};
    if (bpf_map_delete_elem(f_.services.get(), &k) != 0 && errno != ENOENT)
      return Error::errno_error("mn_services delete " + vip.str());
    return Ok();
  }
  Result<std::map<net::Endpoint, uint32_t>> services() override {
    std::map<net::Endpoint, uint32_t> out;
    for_each_key<mn_svc_key>(f_.services.get(), [&](const mn_svc_key& k) {
      mn_svc_val v{};
      if (bpf_map_lookup_elem(f_.services.get(), &k, &v) == 0)
        out[{ntohl(k.addr), ntohs(k.port)}] = v.listener_id;
    });
    return out;
  }

  Result<OrigDst> original_dst(int fd) override {
    mn_orig_dst v{};
    if (bpf_map_lookup_elem(f_.orig.get(), &fd, &v) == 0 && (v.flags & MN_ORIG_F_ACCEPTED))
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
    if (bpf_map_lookup_elem(f_.tuple.get(), &k, &v) != 0)
      return Error{std::make_error_code(std::errc::no_such_file_or_directory),
                   "no original destination recorded for this connection"};
    bpf_map_delete_elem(f_.tuple.get(), &k);
    return OrigDst{{ntohl(v.addr), ntohs(v.port)}, v.pod_netns, true};
  }

  Result<void> set_pod(uint64_t netns, uint32_t flags) override {
    mn_pod_val v{flags, 0};
    if (bpf_map_update_elem(f_.pods.get(), &netns, &v, BPF_ANY) != 0)
      return Error::errno_error("mn_pods update");
    return Ok();
  }
  Result<void> remove_pod(uint64_t netns) override {
    if (bpf_map_delete_elem(f_.pods.get(), &netns) != 0 && errno != ENOENT)
      return Error::errno_error("mn_pods delete");
    return Ok();
  }
  Result<std::map<uint64_t, uint32_t>> pods() override {
    std::map<uint64_t, uint32_t> out;
    for_each_key<uint64_t>(f_.pods.get(), [&](const uint64_t& k) {
      mn_pod_val v{};
      if (bpf_map_lookup_elem(f_.pods.get(), &k, &v) == 0) out[k] = v.flags;
    });
    return out;
  }
  Result<void> exclude_port(uint64_t netns, uint16_t port, bool excluded) override {
    mn_excl_key k{};
    k.netns = netns;
    k.port = htons(port);
    uint32_t one = 1;
    int rc = excluded ? bpf_map_update_elem(f_.excl.get(), &k, &one, BPF_ANY)
                      : bpf_map_delete_elem(f_.excl.get(), &k);
    if (rc != 0 && !(errno == ENOENT && !excluded)) return Error::errno_error("mn_excl update");
    return Ok();
  }
  Result<std::vector<std::pair<uint64_t, uint16_t>>> excluded_ports() override {
    std::vector<std::pair<uint64_t, uint16_t>> out;
    for_each_key<mn_excl_key>(f_.excl.get(),
                              [&](const mn_excl_key& k) { out.emplace_back(k.netns, ntohs(k.port)); });
    return out;
  }
  Result<std::vector<SocketEntry>> sockets() override {
    std::vector<SocketEntry> out;
    if (f_.sockhash.get() < 0) return out;
    for_each_key<mn_tuple_key>(f_.sockhash.get(), [&](const mn_tuple_key& k) {
      out.push_back({{ntohl(k.saddr), ntohs(k.sport)}, {ntohl(k.daddr), ntohs(k.dport)}, k.netns});
    });
    return out;
  }
  Result<size_t> pending_tuples() override {
    size_t n = 0;
    for_each_key<mn_tuple_key>(f_.tuple.get(), [&](const mn_tuple_key&) { ++n; });
    return n;
  }

  Result<void> check_access() override {
    uint32_t zero = 0;
    mn_config cfg{};
    if (bpf_map_lookup_elem(f_.config.get(), &zero, &cfg) != 0) return Error::errno_error("mn_config lookup");
    return Ok();
  }

  Result<std::vector<Counter>> counters() override {
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) return Error::invalid("cannot count possible CPUs");
    std::vector<uint64_t> per_cpu(size_t(ncpu), 0);
    std::vector<Counter> out;
    for (uint32_t i = 0; i < MN_C__COUNT; ++i) {
      uint64_t sum = 0;
      if (bpf_map_lookup_elem(f_.counters.get(), &i, per_cpu.data()) == 0)
        for (uint64_t v : per_cpu) sum += v;
      out.push_back({kCounterNames[i], sum});
    }
    return out;
  }

 private:
  Result<void> write_config() {
    cfg_.heartbeat_ns = monotonic_ns();
    uint32_t zero = 0;
    if (bpf_map_update_elem(f_.config.get(), &zero, &cfg_, BPF_ANY) != 0)
      return Error::errno_error("mn_config update");
    return Ok();
  }

  template <class K, class F>
  static void for_each_key(int fd, F&& f) {
    K k{}, next{};
    void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
      f(next);
      k = next;
      prev = &k;
    }
  }

  metanode_bpf* skel_;
  Fds f_;
  mn_config cfg_{};
};

Fd dup_fd(int fd) { return Fd(fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

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

struct Loaded {
  metanode_bpf* skel;
  std::string notes;  // what the layout migration did
};

Result<Loaded> open_and_load(const std::string& pin_dir, bool skmsg, bool getpeername, bool getsockopt) {
  metanode_bpf* skel = metanode_bpf__open();
  if (!skel) return Error::errno_error("open BPF skeleton");
  bpf_map* maps[] = {skel->maps.mn_services, skel->maps.mn_pods,      skel->maps.mn_config,
                     skel->maps.mn_orig_dst, skel->maps.mn_tuple,     skel->maps.mn_sock_hash,
                     skel->maps.mn_counters, skel->maps.mn_excl};
  for (bpf_map* m : maps) {
    std::string p = pin_dir + "/" + bpf_map__name(m);
    bpf_map__set_pin_path(m, p.c_str());
  }
  if (!getpeername) {
    bpf_program__set_autoload(skel->progs.mn_getpeername4, false);
    bpf_program__set_autoload(skel->progs.mn_getpeername6, false);
  }
  if (!skmsg) bpf_program__set_autoload(skel->progs.mn_sk_msg, false);
  if (!getsockopt) bpf_program__set_autoload(skel->progs.mn_getsockopt, false);
  auto mig = LayoutMigration::prepare(skel->obj, pin_dir);
  if (!mig) {
    metanode_bpf__destroy(skel);
    return mig.error();
  }
  int err = metanode_bpf__load(skel);
  if (err) {
    mig->restore();  // the running install stays as it was
    metanode_bpf__destroy(skel);
    return Error::errno_error("load BPF programs (see the verifier log above)", -err);
  }
  auto notes = mig->finish(skel->obj);
  if (!notes) {
    metanode_bpf__destroy(skel);
    return notes.error();
  }
  return Loaded{skel, std::move(*notes)};
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

std::string Features::missing_required() const {
  std::string m;
  if (!cgroup_sock_addr) m += " cgroup sock_addr programs;";
  if (!sock_ops) m += " sock_ops programs;";
  if (!sk_storage) m += " socket-local storage maps;";
  if (!netns_cookie) m += " bpf_get_netns_cookie in sock_addr programs;";
  return m;
}

Features probe_features() {
  Features f;
  // A refused program load looks like an unsupported type to libbpf's
  // probes: tell the two apart by what this process may do (CAP_BPF, or
  // CAP_SYS_ADMIN before 5.8; and CAP_NET_ADMIN for these program types).
  if (sys::Capabilities c; sys::capabilities(c)) {
    f.denied = !c.has(CAP_NET_ADMIN) || !(c.has(CAP_BPF) || c.has(CAP_SYS_ADMIN));
  }
  f.cgroup_sock_addr = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, nullptr) > 0;
  f.sock_ops = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SOCK_OPS, nullptr) > 0;
  f.sk_storage = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_SK_STORAGE, nullptr) > 0;
  f.sk_msg = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_MSG, nullptr) > 0 &&
             libbpf_probe_bpf_map_type(BPF_MAP_TYPE_SOCKHASH, nullptr) > 0;
  f.sockopt = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_CGROUP_SOCKOPT, nullptr) > 0;
  f.netns_cookie = libbpf_probe_bpf_helper(BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
                                           BPF_FUNC_get_netns_cookie, nullptr) > 0;
  return f;
}

Result<Installed> install_kernel(const InstallOptions& in) {
  InstallOptions opts = in;
  std::string pin_dir = opts.pin_dir.empty() ? MN_PIN_DIR_DEFAULT : opts.pin_dir;
  Installed result;

  // Probe first: a clear message (or a fallback) beats a verifier log.
  Features feat = probe_features();
  if (feat.denied)
    return Error::invalid(
        "not permitted to load BPF programs: interception needs CAP_BPF and CAP_NET_ADMIN "
        "(docs/SECURITY.md, the chart's capability list), or run with --no-bpf");
  if (auto m = feat.missing_required(); !m.empty())
    return Error::invalid("this kernel lacks what interception needs:" + m +
                          " run with --no-bpf (plain layer-7 proxy) instead");
  if (opts.skmsg && !feat.sk_msg) {
    opts.skmsg = false;
    result.notes += "no sk_msg/sockhash support: payload takes the TCP path (connect redirect only); ";
  }
  if (opts.getsockopt && !feat.sockopt) {
    opts.getsockopt = false;
    result.notes += "no cgroup getsockopt support: SO_ORIGINAL_DST not answered; ";
  }

  if (auto r = ensure_bpffs(pin_dir); !r) return r.error();
  if (auto r = mkdir_p(pin_dir); !r) return r.error();
  if (auto r = mkdir_p(pin_dir + "/links"); !r) return r.error();

  if (!is_fs(opts.cgroup_path, CGROUP2_SUPER_MAGIC))
    return Error::invalid("--cgroup " + opts.cgroup_path + " is not a cgroup v2 directory");
  Fd cg(open(opts.cgroup_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (cg.get() < 0) return Error::errno_error("open cgroup " + opts.cgroup_path);
  uint64_t cg_id = cgroup_id_of_path(opts.cgroup_path);

  // Maps pinned by an earlier version are reused or migrated
  // (map_layout.h), never wiped: pods and exclusions registered by hand stay.
  auto loaded = open_and_load(pin_dir, opts.skmsg, opts.getpeername, opts.getsockopt);
  if (!loaded) return loaded.error();
  if (!loaded->notes.empty()) result.notes += "pinned maps: " + loaded->notes;
  metanode_bpf* skel = loaded->skel;

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
  struct Link {
    bpf_program* prog;
    const char* pin;
    bool wanted;
  };
  const Link links[] = {{skel->progs.mn_sockops, "mn_sockops", true},
                        {skel->progs.mn_connect4, "mn_connect4", true},
                        {skel->progs.mn_connect6, "mn_connect6", true},
                        {skel->progs.mn_getpeername4, "mn_getpeername4", opts.getpeername},
                        {skel->progs.mn_getpeername6, "mn_getpeername6", opts.getpeername},
                        {skel->progs.mn_getsockopt, "mn_getsockopt", opts.getsockopt}};
  for (const auto& l : links) {
    std::string path = pin_dir + "/links/" + l.pin;
    if (!l.wanted) {
      // A previous install may have had it: detach what this one does not run.
      if (exists(path)) {
        int fd = bpf_obj_get(path.c_str());
        if (fd >= 0) {
          bpf_link_detach(fd);
          close(fd);
        }
        unlink(path.c_str());
      }
      continue;
    }
    if (auto r = attach_pinned(l.prog, cg.get(), cg_id, path); !r) {
      metanode_bpf__destroy(skel);
      return r.error();
    }
  }

  KernelMaps::Fds fds;
  fds.services = dup_fd(bpf_map__fd(skel->maps.mn_services));
  fds.pods = dup_fd(bpf_map__fd(skel->maps.mn_pods));
  fds.config = dup_fd(bpf_map__fd(skel->maps.mn_config));
  fds.orig = dup_fd(bpf_map__fd(skel->maps.mn_orig_dst));
  fds.tuple = dup_fd(bpf_map__fd(skel->maps.mn_tuple));
  fds.counters = dup_fd(bpf_map__fd(skel->maps.mn_counters));
  fds.excl = dup_fd(bpf_map__fd(skel->maps.mn_excl));
  fds.sockhash = dup_fd(bpf_map__fd(skel->maps.mn_sock_hash));
  result.maps = std::make_unique<KernelMaps>(skel, std::move(fds));
  result.skmsg = opts.skmsg;
  result.getsockopt = opts.getsockopt;
  return result;
}

Result<std::unique_ptr<Maps>> open_pinned(const std::string& pin_dir) {
  auto get = [&](const char* name) { return Fd(bpf_obj_get((pin_dir + "/" + name).c_str())); };
  KernelMaps::Fds f;
  f.services = get(MN_MAP_SERVICES);
  f.pods = get(MN_MAP_PODS);
  f.config = get(MN_MAP_CONFIG);
  f.orig = get(MN_MAP_ORIG_DST);
  f.tuple = get(MN_MAP_TUPLE);
  f.counters = get(MN_MAP_COUNTERS);
  f.excl = get(MN_MAP_EXCL);
  f.sockhash = get(MN_MAP_SOCK_HASH);  // absent when sk_msg is unsupported
  for (const Fd* fd : {&f.services, &f.pods, &f.config, &f.orig, &f.tuple, &f.counters, &f.excl})
    if (fd->get() < 0) return Error::errno_error("open pinned maps under " + pin_dir);
  return std::unique_ptr<Maps>(std::make_unique<KernelMaps>(nullptr, std::move(f)));
}

Result<NetnsInfo> netns_info(const std::string& netns_path) {
  Result<NetnsInfo> out = Error::invalid("netns cookie: not computed");
  // setns() affects only the calling thread: do it on a thread of its own.
  std::thread t([&] {
    Fd ns(open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (ns.get() < 0 || setns(ns.get(), CLONE_NEWNET) != 0) {
      out = Error::errno_error("enter netns " + netns_path);
      return;
    }
    Fd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    NetnsInfo info;
    socklen_t len = sizeof(info.cookie);
    if (s.get() < 0 || getsockopt(s.get(), SOL_SOCKET, SO_NETNS_COOKIE, &info.cookie, &len) != 0) {
      out = Error::errno_error("SO_NETNS_COOKIE in " + netns_path);
      return;
    }
    // getifaddrs' netlink socket is created in this thread's namespace.
    ifaddrs* ifs = nullptr;
    if (getifaddrs(&ifs) != 0) {
      out = Error::errno_error("addresses in " + netns_path);
      return;
    }
    for (auto* i = ifs; i; i = i->ifa_next) {
      if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
      uint32_t a = ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr);
      if ((a >> 24) != 127) info.ipv4.push_back(a);
    }
    freeifaddrs(ifs);
    out = std::move(info);
  });
  t.join();
  return out;
}

Result<uint64_t> netns_cookie(const std::string& netns_path) {
  auto info = netns_info(netns_path);
  if (!info) return info.error();
  return info->cookie;
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
  const char* maps[] = {MN_MAP_SERVICES, MN_MAP_PODS,      MN_MAP_CONFIG,   MN_MAP_ORIG_DST,
                        MN_MAP_TUPLE,    MN_MAP_SOCK_HASH, MN_MAP_COUNTERS, MN_MAP_EXCL,
                        MN_MAP_LAYOUT};
  for (const char* m : maps) {
    std::string p = pin_dir + "/" + m;
    if (unlink(p.c_str()) != 0 && errno != ENOENT) return Error::errno_error("unpin " + p);
  }
  if (rmdir(pin_dir.c_str()) != 0 && errno != ENOENT)
    return Error::errno_error("remove " + pin_dir + " (unknown files left in it?)");
  return Ok();
}

}  // namespace metanode::bpf
