// The list/watch state machine against a scripted transport: versions,
// bookmarks, resumption, 410 relists, backoff, bounds.
#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <optional>

#include "metanode/kube/reflector.h"

namespace metanode::kube {
namespace {
using namespace std::chrono_literals;

// Records each request; the test answers the one pending.
class ScriptedTransport : public Transport {
 public:
  std::vector<std::string> targets;
  std::optional<ResponseHandler> pending;
  int cancels = 0;
  void get(const std::string& target, ResponseHandler h) override {
    targets.push_back(target);
    pending = std::move(h);
  }
  void cancel() override {
    ++cancels;
    pending.reset();
  }
  void status(int code) { pending->on_status(code); }
  // false: the reader stopped the request (as HttpTransport then reports).
  bool data(std::string_view d) {
    if (pending->on_data(d)) return true;
    end(Error::invalid("stopped by the reader"));
    return false;
  }
  void end(Result<void> r = Ok()) {
    auto h = std::move(*pending);
    pending.reset();
    h.on_done(std::move(r));  // may issue the next request
  }
  void reply(int code, std::string_view body) {
    status(code);
    if (data(body)) end();
  }
};

struct Seen {
  std::vector<size_t> replaced;  // sizes of each list applied
  std::vector<std::pair<EventType, std::string>> events;  // type, metadata.name
};

class ReflectorTest : public ::testing::Test {
 protected:
  void make(ReflectorOptions o = {}) {
    if (o.path.empty()) o.path = "/api/v1/pods";
    o.selector = "fieldSelector=spec.nodeName%3Dn1";
    o.min_backoff = 5ms;
    o.max_backoff = 20ms;
    auto t = std::make_unique<ScriptedTransport>();
    t_ = t.get();
    ReflectorHandler h;
    h.replace = [this](const std::vector<boost::json::value>& items) { seen_.replaced.push_back(items.size()); };
    h.event = [this](EventType type, const boost::json::value& v) {
      seen_.events.emplace_back(type, std::string(v.at("metadata").at("name").as_string()));
    };
    r_ = std::make_unique<Reflector>(io_, std::move(t), o, h);
    r_->start();
  }
  // Runs timers (backoff, relist) until a new request is pending.
  void until_request() {
    size_t n = t_->targets.size();
    for (int i = 0; i < 200 && t_->targets.size() == n; ++i) {
      io_.restart();
      io_.run_for(5ms);
    }
    ASSERT_GT(t_->targets.size(), n) << "no request was made";
  }
  static std::string pod(const std::string& name, int rv) {
    return R"({"kind":"Pod","metadata":{"name":")" + name + R"(","namespace":"ns","resourceVersion":")" +
           std::to_string(rv) + R"("}})";
  }
  static std::string list(int rv, const std::vector<std::string>& items) {
    std::string s = R"({"kind":"PodList","metadata":{"resourceVersion":")" + std::to_string(rv) + R"("},"items":[)";
    for (size_t i = 0; i < items.size(); ++i) s += (i ? "," : "") + items[i];
    return s + "]}";
  }
  static std::string ev(const std::string& type, const std::string& obj) {
    return R"({"type":")" + type + R"(","object":)" + obj + "}\n";
  }
  boost::asio::io_context io_;
  ScriptedTransport* t_ = nullptr;
  std::unique_ptr<Reflector> r_;
  Seen seen_;
};

TEST_F(ReflectorTest, ListsThenWatchesFromItsVersionAndResumesFromTheLastOne) {
  make();
  ASSERT_EQ(t_->targets.size(), 1u);
  EXPECT_EQ(t_->targets[0], "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&limit=500");
  EXPECT_FALSE(r_->synced());
  t_->reply(200, list(10, {pod("a", 9), pod("b", 10)}));
  EXPECT_TRUE(r_->synced());
  ASSERT_EQ(seen_.replaced, std::vector<size_t>{2});
  ASSERT_EQ(t_->targets.size(), 2u);
  EXPECT_EQ(t_->targets[1],
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&watch=true&allowWatchBookmarks=true&"
            "resourceVersion=10&timeoutSeconds=300");
  t_->status(200);
  // Events split anywhere across chunks, several in one.
  std::string stream = ev("ADDED", pod("c", 11)) + ev("MODIFIED", pod("a", 12)) +
                       ev("BOOKMARK", R"({"kind":"Pod","metadata":{"resourceVersion":"20"}})") +
                       ev("DELETED", pod("b", 21));
  for (size_t i = 0; i < stream.size(); i += 7) ASSERT_TRUE(t_->data(stream.substr(i, 7)));
  ASSERT_EQ(seen_.events.size(), 3u);
  EXPECT_EQ(seen_.events[0], std::make_pair(EventType::kAdded, std::string("c")));
  EXPECT_EQ(seen_.events[1], std::make_pair(EventType::kModified, std::string("a")));
  EXPECT_EQ(seen_.events[2], std::make_pair(EventType::kDeleted, std::string("b")));
  EXPECT_EQ(r_->resource_version(), "21");
  EXPECT_EQ(r_->stats().bookmarks, 1u);
  // A bookmark alone moves the version on.
  ASSERT_TRUE(t_->data(ev("BOOKMARK", R"({"kind":"Pod","metadata":{"resourceVersion":"30"}})")));
  // The server ends the watch (its timeout): resumed at once, from 30.
  t_->end();
  ASSERT_EQ(t_->targets.size(), 3u);
  EXPECT_NE(t_->targets[2].find("watch=true"), std::string::npos);
  EXPECT_NE(t_->targets[2].find("resourceVersion=30"), std::string::npos) << t_->targets[2];
  EXPECT_EQ(r_->stats().lists, 1u);
  EXPECT_EQ(r_->stats().errors, 0u);
}

// Lists come in pages of page_size, as client-go's pager reads them: each
// continue token is sent back (URL-encoded) for the next page, the set is
// applied once, whole, at the first page's version; a token the server no
// longer has (410) starts the list over.
TEST_F(ReflectorTest, ListsInPagesFollowingContinueTokens) {
  ReflectorOptions o;
  o.page_size = 2;
  make(o);
  auto page = [](int rv, const std::string& next, const std::vector<std::string>& items) {
    std::string l = list(rv, items);
    if (next.empty()) return l;
    return l.replace(l.find(R"("resourceVersion")"), 0, R"("continue":")" + next + R"(","remainingItemCount":1,)");
  };
  EXPECT_EQ(t_->targets[0], "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&limit=2");
  t_->reply(200, page(10, "tok/1=10", {pod("a", 9), pod("b", 10)}));
  EXPECT_TRUE(seen_.replaced.empty()) << "nothing applied before the last page";
  ASSERT_EQ(t_->targets.size(), 2u);
  EXPECT_EQ(t_->targets[1], "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&limit=2&continue=tok%2F1%3D10");
  t_->reply(200, page(10, "", {pod("c", 8)}));
  EXPECT_EQ(seen_.replaced, std::vector<size_t>{3});
  EXPECT_EQ(r_->resource_version(), "10");
  EXPECT_NE(t_->targets.back().find("watch=true"), std::string::npos);
  EXPECT_EQ(r_->stats().pages, 2u);

  // Relisted after an expired watch: the second page's token has expired.
  t_->status(200);
  ASSERT_FALSE(t_->data(ev("ERROR", R"({"kind":"Status","code":410})")));
  until_request();
  t_->reply(200, page(20, "tok/2=20", {pod("a", 9), pod("b", 10)}));
  t_->reply(410, R"({"kind":"Status","code":410,"reason":"Expired"})");
  until_request();
  EXPECT_EQ(t_->targets.back(), "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&limit=2") << "from the start";
  t_->reply(200, page(30, "", {pod("a", 9)}));
  EXPECT_EQ(seen_.replaced, (std::vector<size_t>{3, 1})) << "the half-read list was never applied";
  EXPECT_EQ(r_->resource_version(), "30");
  EXPECT_EQ(r_->stats().errors, 0u);
}

TEST_F(ReflectorTest, ExpiredVersionAsErrorEventOrStatusListsAgain) {
  make();
  t_->reply(200, list(10, {pod("a", 9)}));
  t_->status(200);
  const std::string expired =
      R"j({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",)j"
      R"j("message":"too old resource version: 10 (15)","reason":"Expired","code":410})j";
  ASSERT_FALSE(t_->data(ev("ERROR", expired))) << "the watch is ended by the reader";
  until_request();
  EXPECT_EQ(t_->targets.back(), "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&limit=500") << "a list, not a watch";
  EXPECT_EQ(r_->stats().expired, 1u);
  t_->reply(200, list(16, {}));  // the pod went while we were not watching
  EXPECT_EQ(seen_.replaced, (std::vector<size_t>{1, 0}));
  // The same as an HTTP status.
  t_->reply(410, R"({"kind":"Status","code":410})");
  until_request();
  EXPECT_EQ(t_->targets.back().find("watch=true"), std::string::npos);
  EXPECT_EQ(r_->stats().expired, 2u);
  EXPECT_EQ(r_->stats().errors, 0u) << "expiry is routine, not an error";
}

TEST_F(ReflectorTest, FailuresBackOffAndSayWhy) {
  make();
  t_->reply(403, R"({"kind":"Status","message":"pods is forbidden: User \"system:serviceaccount:x:y\" cannot list resource \"pods\"","code":403})");
  EXPECT_FALSE(r_->synced());
  EXPECT_EQ(r_->stats().errors, 1u);
  EXPECT_NE(r_->last_error().find("HTTP 403: pods is forbidden"), std::string::npos) << r_->last_error();
  ASSERT_EQ(t_->targets.size(), 1u) << "not at once";
  until_request();
  EXPECT_EQ(t_->targets.back().find("watch=true"), std::string::npos) << "never synced: list again";
  t_->end(Error::invalid("connect: refused"));
  until_request();
  t_->reply(200, list(5, {}));
  EXPECT_TRUE(r_->synced());
  // A watch that cannot be understood: backed off, then watched again from
  // the same version (no list needed).
  t_->status(200);
  EXPECT_FALSE(t_->data("not json\n"));
  EXPECT_EQ(r_->stats().errors, 3u);
  until_request();
  EXPECT_NE(t_->targets.back().find("watch=true&allowWatchBookmarks=true&resourceVersion=5"), std::string::npos);
  // A watch that ends at once with nothing: backed off too, not a hot loop
  // (nor an error: a server closing watches does that).
  size_t n = t_->targets.size();
  t_->status(200);
  t_->end();
  EXPECT_EQ(t_->targets.size(), n);
  EXPECT_EQ(r_->stats().errors, 3u);
  until_request();
}

TEST_F(ReflectorTest, ListsAndEventsAreBounded) {
  ReflectorOptions o;
  o.max_list_bytes = 64;
  o.max_event_bytes = 32;
  make(o);
  t_->status(200);
  EXPECT_FALSE(t_->data(std::string(100, ' '))) << "the body is not buffered past the bound";
  EXPECT_NE(r_->last_error().find("larger than 64 bytes"), std::string::npos) << r_->last_error();
  EXPECT_TRUE(seen_.replaced.empty());
  until_request();
  t_->reply(200, list(1, {}));
  t_->status(200);
  EXPECT_FALSE(t_->data(std::string(40, 'x')));  // no newline within the bound
  EXPECT_NE(r_->last_error().find("an event larger than 32 bytes"), std::string::npos) << r_->last_error();
}

TEST_F(ReflectorTest, StopCancelsTheRequestAndTheRetry) {
  make();
  t_->reply(500, "{}");
  r_->stop();
  EXPECT_GE(t_->cancels, 1);
  io_.restart();
  io_.run_for(50ms);
  EXPECT_EQ(t_->targets.size(), 1u) << "no retry after stop";
}

}  // namespace
}  // namespace metanode::kube
