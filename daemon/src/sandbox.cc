#include "sandbox.h"

#include "metanode/sys.h"

#include <linux/audit.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <string>

namespace metanode::core {
namespace {

constexpr uint64_t bit(int cap) { return uint64_t(1) << cap; }

// Inheritable always empty: nothing this process could exec keeps a capability.
bool set_caps(uint64_t effective, uint64_t permitted) {
  __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct d[2]{};
  d[0].effective = uint32_t(effective);
  d[1].effective = uint32_t(effective >> 32);
  d[0].permitted = uint32_t(permitted);
  d[1].permitted = uint32_t(permitted >> 32);
  return syscall(SYS_capset, &h, d) == 0;
}

std::string cap_names(uint64_t caps) {
  static const std::pair<int, const char*> kNames[] = {
      {CAP_NET_BIND_SERVICE, "NET_BIND_SERVICE"}, {CAP_NET_ADMIN, "NET_ADMIN"},
      {CAP_SYS_ADMIN, "SYS_ADMIN"}, {CAP_BPF, "BPF"}};
  std::string out;
  for (const auto& [cap, name] : kNames)
    if (caps & bit(cap)) out += (out.empty() ? "" : ",") + std::string(name);
  uint64_t named = 0;
  for (const auto& [cap, name] : kNames) named |= bit(cap);
  if (caps & ~named) out += (out.empty() ? "" : ",") + std::string("others");
  return out.empty() ? "none" : out;
}

#if defined(__x86_64__)
constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
#else
#error "seccomp allow-list: add this architecture"
#endif

// Every system call the running daemon makes: its event loops (epoll,
// sockets, timers), threads and allocation, gRPC (xDS, the CA, the rate
// limit service; DNS and TLS included), inotify on the config directory,
// and BPF map operations. Not here: execve, ptrace, mount, module, kexec,
// keyring, process_vm_*, open_by_handle_at, personality, chroot, ...
// clone is filtered on its flags below (threads only), clone3 refused.
const long kAllowed[] = {
    SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_pread64, SYS_pwrite64, SYS_close,
    SYS_fstat, SYS_newfstatat, SYS_statx, SYS_lseek, SYS_fstatfs, SYS_statfs, SYS_fsync,
    SYS_fdatasync, SYS_mmap, SYS_munmap, SYS_mprotect, SYS_mremap, SYS_madvise, SYS_brk,
    SYS_mincore, SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_sigaltstack,
    SYS_ioctl, SYS_fcntl, SYS_dup, SYS_dup3, SYS_pipe2, SYS_socket, SYS_socketpair,
    SYS_connect, SYS_accept, SYS_accept4, SYS_bind, SYS_listen, SYS_shutdown,
    SYS_getsockname, SYS_getpeername, SYS_setsockopt, SYS_getsockopt, SYS_sendto,
    SYS_recvfrom, SYS_sendmsg, SYS_recvmsg, SYS_sendmmsg, SYS_recvmmsg, SYS_ppoll,
    SYS_pselect6, SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_pwait, SYS_epoll_pwait2,
    SYS_eventfd2, SYS_timerfd_create, SYS_timerfd_settime, SYS_timerfd_gettime, SYS_futex,
    SYS_set_robust_list, SYS_get_robust_list, SYS_rseq, SYS_exit,
    SYS_exit_group, SYS_gettid, SYS_getpid, SYS_getppid, SYS_tgkill, SYS_sched_yield,
    SYS_sched_getaffinity, SYS_nanosleep, SYS_clock_nanosleep, SYS_clock_gettime,
    SYS_clock_getres, SYS_gettimeofday, SYS_getrandom, SYS_openat, SYS_faccessat,
    SYS_faccessat2, SYS_readlinkat, SYS_getdents64, SYS_getcwd, SYS_uname, SYS_sysinfo,
    SYS_prlimit64, SYS_getrlimit, SYS_getuid, SYS_geteuid, SYS_getgid, SYS_getegid,
    SYS_getresuid, SYS_getresgid, SYS_getgroups, SYS_inotify_init1, SYS_inotify_add_watch,
    SYS_inotify_rm_watch, SYS_membarrier, SYS_restart_syscall, SYS_prctl, SYS_capget,
    SYS_set_tid_address, SYS_sched_getparam, SYS_sched_getscheduler, SYS_getpriority,
#if defined(__x86_64__)
    SYS_open, SYS_stat, SYS_lstat, SYS_access, SYS_readlink, SYS_pipe, SYS_dup2, SYS_poll,
    SYS_select, SYS_epoll_create, SYS_epoll_wait, SYS_eventfd, SYS_time, SYS_arch_prctl,
    SYS_getdents,
#endif
};

// bpf(2) commands the daemon uses after start: map reads and writes on
// fds it already holds. Loading programs or creating maps is refused.
const uint32_t kBpfCommands[] = {BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM,
                                 BPF_MAP_GET_NEXT_KEY, BPF_OBJ_GET_INFO_BY_FD};

bool install_seccomp(bool allow_setns) {
  std::vector<sock_filter> f;
  auto stmt = [&](uint16_t code, uint32_t k) { f.push_back(BPF_STMT(code, k)); };
  auto jump = [&](uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) {
    f.push_back(BPF_JUMP(code, k, jt, jf));
  };
  constexpr uint32_t kKill = SECCOMP_RET_KILL_PROCESS;
  constexpr uint32_t kAllow = SECCOMP_RET_ALLOW;
  stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch));
  jump(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0);
  stmt(BPF_RET | BPF_K, kKill);
  stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr));
#if defined(__x86_64__)
  // The x32 ABI shares this arch value: refuse it outright.
  jump(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1);
  stmt(BPF_RET | BPF_K, kKill);
#endif
  // bpf(): only the listed commands (arg 0); the rest fail with EPERM.
  jump(BPF_JMP | BPF_JEQ | BPF_K, uint32_t(SYS_bpf), 0, uint8_t(3 + std::size(kBpfCommands)));
  stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[0]));
  for (size_t i = 0; i < std::size(kBpfCommands); ++i)
    jump(BPF_JMP | BPF_JEQ | BPF_K, kBpfCommands[i], uint8_t(std::size(kBpfCommands) - i), 0);
  stmt(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
  stmt(BPF_RET | BPF_K, kAllow);
  // Threads, yes; new namespaces, no. clone3 passes its flags in memory
  // the filter cannot read: ENOSYS makes glibc fall back to clone.
  constexpr uint32_t kNamespaces = CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID |
                                   CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP;
  jump(BPF_JMP | BPF_JEQ | BPF_K, uint32_t(SYS_clone3), 0, 1);
  stmt(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS);
  jump(BPF_JMP | BPF_JEQ | BPF_K, uint32_t(SYS_clone), 0, 4);
  stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[0]));
  jump(BPF_JMP | BPF_JSET | BPF_K, kNamespaces, 0, 1);
  stmt(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
  stmt(BPF_RET | BPF_K, kAllow);
  for (long nr : kAllowed) {
    jump(BPF_JMP | BPF_JEQ | BPF_K, uint32_t(nr), 0, 1);
    stmt(BPF_RET | BPF_K, kAllow);
  }
  if (allow_setns) {
    jump(BPF_JMP | BPF_JEQ | BPF_K, uint32_t(SYS_setns), 0, 1);
    stmt(BPF_RET | BPF_K, kAllow);
  }
  stmt(BPF_RET | BPF_K, kKill);
  sock_fprog prog{uint16_t(f.size()), f.data()};
  return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) == 0;
}

}  // namespace

Result<std::string> enter_sandbox(const SandboxOptions& o) {
  // No exec'd program, setuid or file capability can ever add privileges.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return Error::errno_error("PR_SET_NO_NEW_PRIVS");
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  sys::Capabilities now;
  if (!sys::capabilities(now)) return Error::errno_error("capget");
  uint64_t keep = bit(CAP_NET_BIND_SERVICE);  // listeners of new configuration (--no-bpf)
  if (o.intercept) keep |= bit(CAP_NET_ADMIN);  // SO_MARK: our own connects are never redirected
  if (o.enter_netns) keep |= bit(CAP_SYS_ADMIN);  // setns() to read a pod's netns cookie
  uint64_t setpcap = bit(CAP_SETPCAP) & now.effective;  // for the bounding set, until the end
  // What bpf() wants here: CAP_BPF (5.8+), else CAP_SYS_ADMIN. Probe a map
  // read with it out of the effective set; keep it only if that fails.
  uint64_t bpf_cap = (now.permitted & bit(CAP_BPF)) ? bit(CAP_BPF) : bit(CAP_SYS_ADMIN);
  if (o.intercept && o.bpf_works_without_cap && (now.permitted & bpf_cap) && !(keep & bpf_cap)) {
    if (!set_caps((keep | setpcap) & now.permitted, (keep | setpcap | bpf_cap) & now.permitted))
      return Error::errno_error("capset");
    if (!o.bpf_works_without_cap()) keep |= bpf_cap;
  }
  if (setpcap)
    for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; ++cap)
      if (!(keep & bit(cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0)
        return Error::errno_error("PR_CAPBSET_DROP " + std::to_string(cap));
  if (!set_caps(keep & now.permitted, keep & now.permitted)) return Error::errno_error("capset");
  std::string account = "capabilities kept: " + cap_names(keep & now.permitted);
#ifdef METANODE_SANITIZED
  if (o.seccomp) {
    account += "; seccomp off (sanitizer build: LeakSanitizer traces the process at exit)";
  } else
#endif
  if (o.seccomp) {
    if (!install_seccomp(o.enter_netns)) return Error::errno_error("seccomp filter");
    account += "; seccomp allow-list on";
  } else {
    account += "; seccomp off (--no-seccomp)";
  }
  return account;
}

}  // namespace metanode::core
