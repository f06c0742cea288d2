// Faults through the real daemon (metanoded --no-bpf on loopback): hostile
// clients and broken upstreams. Each test proves the faulty connection gets
// a protocol error or a close while a steady client of a healthy service on
// the same daemon sees zero errors. The upstreams are our scripted fake
// (tests/support/fake_upstream.h), which can misbehave on demand; the
// real-peer tests (thrift_interop_test, dubbo_interop_test) cover other
// implementations behaving well and being killed.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <thread>

#include "fake_upstream.h"
#include "local_daemon.h"

namespace metanode::testbed {
namespace {

using namespace std::chrono_literals;
using Act = FakeUpstream::Act;

std::string service(const std::string& name, int vip_port, const std::vector<int>& endpoints) {
  std::string y = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
                  "metadata: {name: " + name + ", namespace: ns}\n"
                  "spec:\n  hosts: [" + name + ".ns.svc.cluster.local]\n  addresses: [127.0.0.1]\n"
                  "  ports: [{number: " + std::to_string(vip_port) + ", name: tcp-metaprotocol-thrift}]\n"
                  "  endpoints:\n";
  for (int p : endpoints)
    y += "  - {address: 127.0.0.1, ports: {tcp-metaprotocol-thrift: " + std::to_string(p) + "}}\n";
  return y;
}

class Faults : public ::testing::Test {
 protected:
  // A healthy service and a faulty one, both on the daemon.
  void start(FakeUpstream::Script bad_script, std::vector<std::string> args = {}) {
    bad_ = std::make_unique<FakeUpstream>("bad", std::move(bad_script));
    good_vip_ = free_port();
    bad_vip_ = free_port();
    d_.write_config("good.yaml", service("good", good_vip_, {good_.port()}));
    d_.write_config("bad.yaml", service("bad", bad_vip_, {bad_->port()}));
    // Defaults first: a test's own flags come later and win.
    args.insert(args.begin(), {"--workers", "2", "--request-timeout-ms", "1000"});
    ASSERT_TRUE(d_.start(args)) << d_.log();
    steady_ = std::make_unique<SteadyClient>(good_vip_);
  }
  // The healthy service's client made calls and had no error.
  void expect_unharmed() {
    std::this_thread::sleep_for(200ms);
    steady_->stop();
    EXPECT_GT(steady_->ok(), 10);
    EXPECT_EQ(steady_->errors(), 0) << "a fault elsewhere failed a healthy call";
  }
  uint64_t metric(const std::string& name) { return d_.metric("metanode_" + name); }

  LocalDaemon d_;
  FakeUpstream good_{"good"};
  std::unique_ptr<FakeUpstream> bad_;
  std::unique_ptr<SteadyClient> steady_;
  int good_vip_ = 0, bad_vip_ = 0;
};

TEST_F(Faults, GarbageAndTruncatedFramesCloseOnlyTheirConnection) {
  start(nullptr);
  ThriftClient garbage(bad_vip_);
  // Bytes no Thrift form starts with (a plausible non-strict message
  // header would just be waited for, then cut by the read timeout).
  ASSERT_TRUE(garbage.send_raw("GET / HTTP/1.1\r\nHost: metanode\r\n\r\n"));
  EXPECT_TRUE(garbage.wait_closed(3s));
  ThriftClient oversized(bad_vip_);  // a frame length far beyond the message limit
  ASSERT_TRUE(oversized.send_raw(std::string("\x7f\xff\xff\xff\x80\x01\x00\x01", 8) + "xx"));
  EXPECT_TRUE(oversized.wait_closed(3s));
  {
    ThriftClient truncated(bad_vip_);  // half a message, then the client goes away
    ASSERT_TRUE(truncated.send_raw(thrift_message(1, "get", 1).substr(0, 9)));
  }
  EXPECT_TRUE(eventually([&] { return metric("downstream_decode_error_total") == 2; })) << d_.log();
  ThriftClient after(bad_vip_);
  auto r = after.call("get");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->text, "bad");
  expect_unharmed();
}

// 60 clients that each start a message and trickle a byte a second.
TEST_F(Faults, SlowlorisClientsAreClosedAtTheReadTimeout) {
  start(nullptr, {"--client-read-timeout-ms", "1000"});
  std::string msg = thrift_message(1, "get", 1);
  std::vector<std::unique_ptr<ThriftClient>> slow;
  for (int i = 0; i < 60; ++i) {
    slow.push_back(std::make_unique<ThriftClient>(bad_vip_));
    ASSERT_TRUE(slow.back()->send_raw(msg.substr(0, 1)));
  }
  for (int s = 1; s < 3; ++s) {
    std::this_thread::sleep_for(500ms);
    for (auto& c : slow) c->send_raw(msg.substr(size_t(s), 1));
  }
  int closed = 0;
  for (auto& c : slow) closed += c->wait_closed(3s);
  EXPECT_EQ(closed, 60);
  EXPECT_EQ(metric("downstream_cx_read_timeout_total"), 60u);
  expect_unharmed();
}

// 1 MiB replies to a client that never reads: without the queue limit the
// daemon would hold all 400 (400 MiB).
TEST_F(Faults, ClientThatNeverReadsLeavesTheDaemonsMemoryBounded) {
#ifdef METANODE_SANITIZED
  // AddressSanitizer keeps freed memory in a 256 MiB quarantine by default:
  // RSS would measure that, not us.
  std::string asan = std::getenv("ASAN_OPTIONS") ? std::getenv("ASAN_OPTIONS") : "";
  setenv("ASAN_OPTIONS", (asan + (asan.empty() ? "" : ":") + "quarantine_size_mb=8").c_str(), 1);
#endif
  // Every call resolves as a reply or an over-limit error, not a timeout.
  start(
      [](const std::string&) {
        FakeUpstream::Action a;
        a.reply_bytes = 1u << 20;
        return a;
      },
      {"--request-timeout-ms", "60000"});
  long base = proc_rss_kib(d_.daemon_pid());
  ThriftClient hog(bad_vip_);
  std::string batch;
  for (int i = 1; i <= 400; ++i) batch += thrift_message(1, "get", i);
  ASSERT_TRUE(hog.send_raw(batch));
  ASSERT_TRUE(eventually([&] { return bad_->requests() == 400; }, 30s));
  // 400 MiB of replies against a 32 MiB queue: most become over-limit errors.
  ASSERT_TRUE(eventually([&] { return metric("downstream_rq_reply_overflow_total") > 300; }, 60s))
      << "over limit: " << metric("downstream_rq_reply_overflow_total");
  long peak = proc_rss_kib(d_.daemon_pid());
  RecordProperty("daemon_rss_growth_kib", std::to_string(peak - base));
  // The queue limit (32 MiB) plus replies on their way through.
  EXPECT_LT(peak - base, 96 * 1024) << "RSS grew from " << base << " to " << peak << " KiB";
  expect_unharmed();
}

TEST_F(Faults, FiveThousandPipelinedRequestsAreAllAnswered) {
  start(nullptr);
  ThriftClient c(bad_vip_);
  std::string batch;
  for (int i = 1; i <= 5000; ++i) batch += thrift_message(1, "get", i);
  std::thread writer([&] { EXPECT_TRUE(c.send_raw(batch)); });
  std::set<int32_t> seen;
  for (int i = 0; i < 5000; ++i) {
    auto r = c.read_reply(5000ms);
    if (!r) break;
    if (r->type == 2) seen.insert(r->seqid);
  }
  writer.join();
  EXPECT_EQ(seen.size(), 5000u);
  expect_unharmed();
}

TEST_F(Faults, UpstreamThatClosesMidRequestGetsTheCallAnError) {
  start([](const std::string& m) { return FakeUpstream::Action{m == "die" ? Act::kClose : Act::kReply}; });
  ThriftClient c(bad_vip_);
  auto r = c.call("die");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->type, 3);
  EXPECT_NE(r->text.find("upstream closed"), std::string::npos) << r->text;
  EXPECT_EQ(r->text.find("127.0.0.1"), std::string::npos) << "an internal address in: " << r->text;
  r = c.call("get");  // the client's connection survives
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->text, "bad");
  expect_unharmed();
}

TEST_F(Faults, UpstreamThatNeverAnswersTimesOut) {
  start([](const std::string&) { return FakeUpstream::Action{Act::kSilent}; });
  ThriftClient c(bad_vip_);
  auto t0 = std::chrono::steady_clock::now();
  auto r = c.call("get");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->type, 3);
  EXPECT_NE(r->text.find("timed out"), std::string::npos) << r->text;
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 900ms);
  EXPECT_EQ(metric("upstream_rq_timeout_total"), 1u);
  expect_unharmed();
}

TEST_F(Faults, UpstreamAnsweringGarbageIsCutAndTheCallAnswered) {
  start([](const std::string&) { return FakeUpstream::Action{Act::kGarbage}; });
  ThriftClient c(bad_vip_);
  auto r = c.call("get");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->type, 3);
  EXPECT_EQ(metric("upstream_decode_error_total"), 1u) << d_.log();
  bad_->set_script(nullptr);
  r = c.call("get");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->text, "bad");
  expect_unharmed();
}

TEST_F(Faults, OneOfTwoEndpointsDeadCostsNoFailedCall) {
  int dead = free_port();
  good_vip_ = free_port();
  bad_vip_ = free_port();
  bad_ = std::make_unique<FakeUpstream>("alive");
  d_.write_config("good.yaml", service("good", good_vip_, {good_.port()}));
  d_.write_config("bad.yaml", service("bad", bad_vip_, {bad_->port(), dead}));
  ASSERT_TRUE(d_.start({"--workers", "2"})) << d_.log();
  steady_ = std::make_unique<SteadyClient>(good_vip_);
  ThriftClient c(bad_vip_);
  int ok = 0;
  for (int i = 0; i < 100; ++i) {
    auto r = c.call("get");
    ok += r && r->text == "alive";
  }
  EXPECT_EQ(ok, 100);
  expect_unharmed();
}

// At the fd limit the daemon neither spins nor stays stuck. Not built with
// sanitizers: their runtime needs fds of its own (its memory-readability
// probe opens a pipe) and reports false vptr errors at the limit; the
// regular build runs it (and CI refuses skipped tests).
#ifndef METANODE_SANITIZED
TEST_F(Faults, FdLimitReachedPausesAcceptsAndServiceResumes) {
  start(nullptr);
  pid_t pid = d_.daemon_pid();
  rlimit rl{};
  ASSERT_EQ(prlimit(pid, RLIMIT_NOFILE, nullptr, &rl), 0);
  rlimit low = rl;
  low.rlim_cur = rlim_t(proc_fds(pid) + 20);
  ASSERT_EQ(prlimit(pid, RLIMIT_NOFILE, &low, nullptr), 0);
  std::vector<std::unique_ptr<ThriftClient>> many;
  for (int i = 0; i < 60; ++i) many.push_back(std::make_unique<ThriftClient>(bad_vip_));
  ASSERT_TRUE(eventually([&] { return metric("downstream_cx_accept_fd_limit_total") > 0; }));
  double cpu0 = proc_cpu_seconds(pid);
  std::this_thread::sleep_for(1s);
  double spent = proc_cpu_seconds(pid) - cpu0;
  EXPECT_LT(spent, 0.3) << "the daemon spun at the fd limit";
  // The admin endpoint answers at the limit (its reserve fd).
  EXPECT_EQ(d_.admin("/ready"), "ready\n");
  many.clear();
  ASSERT_EQ(prlimit(pid, RLIMIT_NOFILE, &rl, nullptr), 0);
  ThriftClient after(bad_vip_);
  auto r = after.call("get");
  ASSERT_TRUE(r.has_value()) << "service did not resume: " << d_.log();
  EXPECT_EQ(r->text, "bad");
  steady_->stop();  // its calls at the limit may have waited; the count is not the point here
}
#endif  // METANODE_SANITIZED

// Once started the daemon keeps only what binding new listeners needs,
// cannot gain privileges, and runs under the system call allow-list.
TEST_F(Faults, DaemonKeepsNoPrivilegeItDoesNotNeed) {
  start(nullptr);
  pid_t pid = d_.daemon_pid();
  constexpr uint64_t kNetBindService = uint64_t(1) << 10;
  EXPECT_EQ(proc_caps(pid, "CapEff") & ~kNetBindService, 0u) << proc_status(pid, "CapEff");
  EXPECT_EQ(proc_caps(pid, "CapPrm") & ~kNetBindService, 0u) << proc_status(pid, "CapPrm");
  EXPECT_EQ(proc_caps(pid, "CapInh"), 0u);
  if (is_root()) {
    EXPECT_EQ(proc_caps(pid, "CapBnd") & ~kNetBindService, 0u) << proc_status(pid, "CapBnd");
  }
  EXPECT_EQ(proc_status(pid, "NoNewPrivs"), "1");
#ifndef METANODE_SANITIZED  // no filter there: LeakSanitizer needs ptrace
  EXPECT_EQ(proc_status(pid, "Seccomp"), "2");
#endif
  // Every worker thread too (capabilities are per thread).
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  int threads = 0;
  if (DIR* d = opendir(dir.c_str())) {
    while (auto* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      ++threads;
      std::ifstream f(dir + "/" + e->d_name + "/status");
      std::string line;
      while (std::getline(f, line))
        if (line.rfind("CapEff:", 0) == 0) {
          EXPECT_EQ(std::strtoull(line.c_str() + 7, nullptr, 16) & ~kNetBindService, 0u)
              << "thread " << e->d_name << ": " << line;
        }
    }
    closedir(d);
  }
  EXPECT_GE(threads, 3);
  expect_unharmed();
}

// SIGTERM with 50 calls in flight: every one is answered, then the daemon exits 0.
TEST_F(Faults, SigtermLetsCallsInFlightFinish) {
  // 50 calls of 100 ms on the daemon's four upstream connections: ~1.3 s
  // of work, inside the default 5 s drain.
  start([](const std::string&) { return FakeUpstream::Action{Act::kReply, 100ms}; },
        {"--request-timeout-ms", "8000"});
  steady_->stop();
  std::vector<std::unique_ptr<ThriftClient>> clients;
  for (int i = 0; i < 50; ++i) {
    clients.push_back(std::make_unique<ThriftClient>(bad_vip_));
    ASSERT_TRUE(clients.back()->send_raw(thrift_message(1, "get", i + 1)));
  }
  ASSERT_TRUE(eventually([&] { return bad_->requests() >= 4; }));
  pid_t pid = d_.daemon_pid();
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int answered = 0;
  for (auto& c : clients) {
    auto r = c->read_reply(10s);
    answered += r && r->type == 2;
  }
  EXPECT_EQ(answered, 50) << d_.log();
  int status = 0;
  for (int i = 0; i < 200 && waitpid(pid, &status, WNOHANG) == 0; ++i) std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  EXPECT_NE(d_.log().find("drained in"), std::string::npos) << d_.log();
}

// metanodectl drain with 20 calls in flight and an idle client: every call
// is answered, the idle connection is closed, the command returns once no
// client connection is left, and the daemon stays up, not ready and not
// accepting, until its SIGTERM.
TEST_F(Faults, MetanodectlDrainFinishesCallsAndKeepsTheDaemonUp) {
  start([](const std::string&) { return FakeUpstream::Action{Act::kReply, 100ms}; },
        {"--request-timeout-ms", "8000"});
  steady_->stop();
  ThriftClient idle(bad_vip_);
  auto first = idle.call("get");
  ASSERT_TRUE(first && first->type == 2);
  std::vector<std::unique_ptr<ThriftClient>> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(std::make_unique<ThriftClient>(bad_vip_));
    ASSERT_TRUE(clients.back()->send_raw(thrift_message(1, "get", i + 1)));
  }
  ASSERT_TRUE(eventually([&] { return bad_->requests() >= 5; }));
  auto ctl = std::async(std::launch::async, [&] {
    return run({"/bin/sh", "-c",
                std::string(METANODE_CTL) + " drain -o json --admin 127.0.0.1:" + d_.admin_port_str() + " 2>&1"});
  });
  int answered = 0;
  for (auto& c : clients) {
    auto r = c->read_reply(10s);
    answered += r && r->type == 2;
  }
  EXPECT_EQ(answered, 20) << d_.log();
  EXPECT_TRUE(idle.wait_closed(5s)) << "the idle client connection is closed at once";
  auto r = ctl.get();
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("\"drained\":true,\"client_connections\":0"), std::string::npos) << r.out;
  pid_t pid = d_.daemon_pid();
  EXPECT_EQ(kill(pid, 0), 0) << "drained, not exited";
  int status = 0;
  http_get("", "127.0.0.1:" + d_.admin_port_str(), "/ready", &status);
  EXPECT_EQ(status, 503);
  ThriftClient late(bad_vip_);
  EXPECT_FALSE(late.ok() && late.call("get", 1s)) << "a drained daemon takes no new connection";
  // A second request says so; the SIGTERM then ends it at once.
  auto again = run({"/bin/sh", "-c",
                    std::string(METANODE_CTL) + " drain --admin 127.0.0.1:" + d_.admin_port_str() + " 2>&1"});
  EXPECT_EQ(again.status, 0) << again.out;
  EXPECT_NE(d_.log().find("drain requested through the admin endpoint"), std::string::npos) << d_.log();
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  for (int i = 0; i < 100 && waitpid(pid, &status, WNOHANG) == 0; ++i) std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

}  // namespace
}  // namespace metanode::testbed
