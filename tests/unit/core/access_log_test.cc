// The access log's two formats and its sampling and rate cap.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "metanode/core/access_log.h"

namespace metanode::core {
namespace {

AccessLogEntry entry() {
  AccessLogEntry e;
  e.start = std::chrono::system_clock::time_point(std::chrono::milliseconds(1796292000123));  // 2026-12-03T10:00:00.123Z
  e.protocol = "dubbo";
  e.method = "sayHello";
  e.interface = "org.apache.dubbo.samples.basic.api.DemoService";
  e.response_code = "20";
  e.response_flags = "-";
  e.duration_ms = 1.5;
  e.bytes_received = 210;
  e.bytes_sent = 95;
  e.upstream_cluster = "outbound|20880|v1|demo.dubbo.svc.cluster.local";
  e.upstream_host = "10.244.1.7:20880";
  e.route_name = "v1";
  e.downstream_remote = "10.244.1.9:40112";
  e.downstream_local = "10.96.0.30:20880";
  e.source_workload = "consumer";
  e.source_namespace = "dubbo";
  e.attempts = 2;
  return e;
}

TEST(AccessLogFormat, TextInEnvoysOrder) {
  EXPECT_EQ(format_text(entry()),
            "[2026-12-03T10:00:00.123Z] \"dubbo org.apache.dubbo.samples.basic.api.DemoService/sayHello\" 20 - "
            "210 95 1.500 \"outbound|20880|v1|demo.dubbo.svc.cluster.local\" 10.244.1.7:20880 10.244.1.9:40112 "
            "10.96.0.30:20880 route=v1 source=dubbo/consumer attempts=2\n");
  AccessLogEntry bare;
  bare.protocol = "thrift";
  EXPECT_NE(format_text(bare).find("\"thrift -\" - - 0 0 0.000 \"-\" - - - route=- source=- attempts=0"),
            std::string::npos)
      << format_text(bare);
}

TEST(AccessLogFormat, JsonEscapesWhatTheClientSent) {
  auto e = entry();
  e.method = "say\"Hel\nlo\\";
  std::string j = format_json(e);
  EXPECT_EQ(j.back(), '\n');
  EXPECT_NE(j.find("\"method\":\"say\\\"Hel\\u000alo\\\\\""), std::string::npos) << j;
  EXPECT_NE(j.find("\"start_time\":\"2026-12-03T10:00:00.123Z\""), std::string::npos) << j;
  EXPECT_NE(j.find("\"upstream_request_attempt_count\":2}"), std::string::npos) << j;
  EXPECT_EQ(j.find('\n'), j.size() - 1) << "one line";
}

TEST(AccessLog, SamplesAndCapsAndWritesEveryAdmittedLine) {
  char path[] = "/tmp/metanode-accesslog-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  AccessLogOptions o;
  o.path = path;
  o.sample = 0.25;
  o.max_lines_per_second = 1000000;
  {
    auto log = AccessLog::open(o);
    ASSERT_TRUE(log) << log.error().message();
    EXPECT_TRUE((*log)->admit(0.0));
    EXPECT_TRUE((*log)->admit(0.2499));
    EXPECT_FALSE((*log)->admit(0.25));
    EXPECT_FALSE((*log)->admit(0.9));
    for (int i = 0; i < 3; ++i) (*log)->write(entry());
  }  // written before the destructor returns
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_EQ(ss.str(), format_text(entry()) + format_text(entry()) + format_text(entry()));
  unlink(path);

  o.path = "/dev/null";
  o.sample = 1;
  o.max_lines_per_second = 3;
  auto capped = AccessLog::open(o);
  ASSERT_TRUE(capped);
  int admitted = 0;
  for (int i = 0; i < 100; ++i) admitted += (*capped)->admit(0.5);
  EXPECT_GE(admitted, 3);
  EXPECT_LE(admitted, 6) << "3 a second (the loop may straddle a second)";
  EXPECT_NE((*capped)->metrics_text().find("metanode_access_log_dropped_total{reason=\"rate\"} " +
                                           std::to_string(100 - admitted)),
            std::string::npos);
  o.path = "/nonexistent-dir/x.log";
  EXPECT_FALSE(AccessLog::open(o));
}

}  // namespace
}  // namespace metanode::core
