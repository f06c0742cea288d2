// The sandbox in a child process: after enter_sandbox() a program load is
// refused and exec kills the process. Without the filter the child would
// load nothing (bad program) but exec /bin/true and exit 0.
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <thread>

#include "sandbox.h"

namespace metanode::core {
namespace {

// Exit codes of the child, read by the parent.
enum : int {
  kSandboxFailed = 10,
  kProgLoadNotRefused = 11,
  kExecReturned = 12,
  kNoNewPrivsUnset = 13,
  kNamespaceNotRefused = 14,
  kThreadFailed = 15,
};

int child() {
  SandboxOptions o;
  auto r = enter_sandbox(o);
  if (!r) return kSandboxFailed;
  if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) return kNoNewPrivsUnset;
#ifndef METANODE_SANITIZED
  bpf_attr attr{};
  attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
  if (syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr) != -1 || errno != EPERM) return kProgLoadNotRefused;
  // A new user namespace (the first step of most escapes) is refused...
  if (syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, nullptr, nullptr, nullptr, nullptr) != -1 || errno != EPERM)
    return kNamespaceNotRefused;
#endif
  // ...while threads still start (glibc falls back from clone3 to clone).
  bool ran = false;
  std::thread([&ran] { ran = true; }).join();
  if (!ran) return kThreadFailed;
  char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
  execv("/bin/true", argv);
  return kExecReturned;
}

TEST(Sandbox, RefusesProgramLoadsAndKillsOnExec) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(child());
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
#ifdef METANODE_SANITIZED
  // No filter in sanitizer builds: exec succeeds, and /bin/true exits 0.
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
#else
  ASSERT_TRUE(WIFSIGNALED(status)) << "exited with " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGSYS);
#endif
}

}  // namespace
}  // namespace metanode::core
