// A scripted Thrift upstream (framed binary) and a blocking Thrift client,
// for in-process data-plane tests: the fake decides per request whether to
// answer, answer with a TApplicationException, stay silent, close, or wait,
// and counts what it saw. Our own bytes on both ends; the real-peer tests
// (thrift_interop_test, dubbo_interop_test) cover other implementations.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace metanode::testbed {

// Thrift framed binary messages (TMessageType: 1 call, 2 reply, 3 exception, 4 oneway).
std::string thrift_message(uint8_t type, const std::string& method, int32_t seqid,
                           const std::string& result = "");
struct ThriftReply {
  uint8_t type = 0;
  std::string method;
  int32_t seqid = 0;
  std::string text;  // the reply's string field 0, or the exception's message
};
std::optional<ThriftReply> parse_thrift(const std::string& frame);

class FakeUpstream {
 public:
  // kGarbage answers bytes no Thrift peer would send (an HTTP response).
  enum class Act { kReply, kException, kSilent, kClose, kReplyTwice, kGarbage };
  struct Action {
    Act act = Act::kReply;
    std::chrono::milliseconds delay{0};
    size_t reply_bytes = 0;  // pads the reply's string to this many bytes
  };
  using Script = std::function<Action(const std::string& method)>;

  // Listens on 127.0.0.1 (an ephemeral port); replies carry `name`.
  FakeUpstream(std::string name, Script script = nullptr);
  ~FakeUpstream();
  int port() const { return port_; }
  const std::string& name() const { return name_; }
  int requests() const { return requests_.load(); }
  int connections() const { return connections_.load(); }
  int open_connections() const { return open_.load(); }
  void set_script(Script s);

 private:
  void accept_loop();
  void serve(int fd);

  std::string name_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0}, connections_{0}, open_{0};
  std::mutex mu_;
  Script script_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

// One blocking client connection; `source` binds a local address first
// (e.g. 127.0.0.2, to look like another pod).
class ThriftClient {
 public:
  explicit ThriftClient(int port, const std::string& source = "");
  ~ThriftClient();
  bool ok() const { return fd_ >= 0; }
  // One call; nullopt on a closed connection or no reply in `wait`.
  std::optional<ThriftReply> call(const std::string& method,
                                  std::chrono::milliseconds wait = std::chrono::milliseconds(5000));
  bool send_raw(const std::string& bytes);
  std::optional<ThriftReply> read_reply(std::chrono::milliseconds wait);
  // Discards what arrives until the peer closes (true) or `wait` passes.
  bool wait_closed(std::chrono::milliseconds wait);
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  int32_t seq_ = 0;
};

// Calls "get" on one connection in a loop until stopped, `pause` between
// calls, counting every failure. With `until_error` it stops at the first
// (for a client that never reconnects: a closed connection is the error).
class SteadyClient {
 public:
  explicit SteadyClient(int port, std::chrono::milliseconds pause = std::chrono::milliseconds(5),
                        bool until_error = false)
      : t_([this, port, pause, until_error] { run(port, pause, until_error); }) {}
  ~SteadyClient() { stop(); }
  void stop() {
    stop_ = true;
    if (t_.joinable()) t_.join();
  }
  int ok() const { return ok_; }
  int errors() const { return errors_; }

 private:
  void run(int port, std::chrono::milliseconds pause, bool until_error) {
    ThriftClient c(port);
    while (!stop_) {
      auto r = c.ok() ? c.call("get", std::chrono::milliseconds(5000)) : std::nullopt;
      if (r && r->type == 2) {
        ++ok_;
      } else {
        ++errors_;
        if (until_error) return;
      }
      if (pause.count()) std::this_thread::sleep_for(pause);
    }
  }
  std::atomic<bool> stop_{false};
  std::atomic<int> ok_{0}, errors_{0};
  std::thread t_;
};

}  // namespace metanode::testbed
