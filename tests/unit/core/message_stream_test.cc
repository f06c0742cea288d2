// The read half both connection kinds share: whole messages out of a
// byte stream, a bounded number per pass, refused ones kept.
#include "message_stream.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "fake_upstream.h"

namespace metanode::core {
namespace {

// Puts `bytes` where the next read would and decodes them.
template <class OnMsg>
std::optional<std::string> feed(MessageStream& s, codecs::Codec& c, const std::string& bytes, OnMsg&& on_msg) {
  auto space = s.read_space();
  EXPECT_GE(space.size(), bytes.size());
  std::memcpy(space.data(), bytes.data(), bytes.size());
  return s.decode(bytes.size(), c, on_msg, [] { return true; });
}

// A burst of 200 pipelined calls comes out 64 at a time, in order, with
// nothing lost at the seams. Red if a pass hands out the whole burst (one
// connection would hold the worker's loop) or if the rest is dropped.
TEST(MessageStream, HandsOutABurstInBoundedPasses) {
  auto codec = codecs::make_codec(Protocol::kThrift);
  MessageStream s(1 << 20);
  std::string burst;
  for (int i = 1; i <= 200; ++i) burst += testbed::thrift_message(1, "get", i);
  std::vector<int32_t> seen;
  auto take = [&](codecs::Message& m, codecs::Bytes) {
    seen.push_back(int32_t(m.request_id));
    return true;
  };
  EXPECT_FALSE(feed(s, *codec, burst, take));
  EXPECT_EQ(seen.size(), MessageStream::kMessagesPerPass);
  EXPECT_TRUE(s.yielded());
  int passes = 1;
  while (s.yielded()) {
    EXPECT_FALSE(s.decode(0, *codec, take, [] { return true; }));
    ++passes;
  }
  ASSERT_EQ(seen.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(seen[size_t(i)], i + 1);
  EXPECT_EQ(passes, 4);  // 64 + 64 + 64 + 8
  EXPECT_EQ(s.buffered(), 0u);
}

// A message on_msg refuses stays buffered, whole, for the next pass.
TEST(MessageStream, RefusedMessageStaysBuffered) {
  auto codec = codecs::make_codec(Protocol::kThrift);
  MessageStream s(1 << 20);
  std::string two = testbed::thrift_message(1, "get", 7) + testbed::thrift_message(1, "get", 8);
  std::vector<int32_t> seen;
  bool refuse = true;
  auto maybe = [&](codecs::Message& m, codecs::Bytes) {
    if (m.request_id == 8 && refuse) return false;
    seen.push_back(int32_t(m.request_id));
    return true;
  };
  EXPECT_FALSE(feed(s, *codec, two, maybe));
  EXPECT_EQ(seen, std::vector<int32_t>{7});
  EXPECT_FALSE(s.yielded());
  EXPECT_EQ(s.buffered(), testbed::thrift_message(1, "get", 8).size());
  refuse = false;
  EXPECT_FALSE(s.decode(0, *codec, maybe, [] { return true; }));
  EXPECT_EQ(seen, (std::vector<int32_t>{7, 8}));
  EXPECT_EQ(s.buffered(), 0u);
}

}  // namespace
}  // namespace metanode::core
