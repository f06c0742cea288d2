// The handover wire (handover.h) over a socketpair: batches of fds arrive
// with their roles and addresses, and a message that does not match its
// fds is refused with every received fd closed.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "handover.h"

namespace metanode::core {
namespace {

struct Pair {
  int a = -1, b = -1;
  Pair() {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) == 0) a = fds[0], b = fds[1];
  }
  ~Pair() {
    ::close(a);
    ::close(b);
  }
};

ino_t inode(int fd) {
  struct stat st{};
  return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

TEST(HandoverWire, SocketsArriveInBatchesWithRolesAndAddresses) {
  Pair p;
  ASSERT_GE(p.a, 0);
  std::vector<HandedSocket> sent;
  for (int i = 0; i < 40; ++i)  // more than one message's worth
    sent.push_back({i % 2 ? "data" : "admin", {0x7f000001u, uint16_t(1000 + i)}, socket(AF_INET, SOCK_STREAM, 0)});
  ASSERT_TRUE(send_sockets(p.a, sent));
  auto got = recv_sockets(p.b, std::chrono::milliseconds(1000));
  ASSERT_TRUE(got) << got.error().message();
  ASSERT_EQ(got->size(), sent.size());
  for (size_t i = 0; i < sent.size(); ++i) {
    EXPECT_EQ((*got)[i].role, sent[i].role);
    EXPECT_EQ((*got)[i].addr, sent[i].addr);
    EXPECT_EQ(inode((*got)[i].fd), inode(sent[i].fd)) << "the same socket, not a copy";
  }
  int admin = take_socket(*got, "admin", {0x7f000001u, 1000});
  EXPECT_EQ(inode(admin), inode(sent[0].fd));
  EXPECT_EQ(take_socket(*got, "admin", {0x7f000001u, 1000}), -1) << "taken once";
  ::close(admin);
  close_all(*got);
  close_all(sent);
}

TEST(HandoverWire, LinesThatDoNotMatchTheFdsAreRefused) {
  Pair p;
  ASSERT_GE(p.a, 0);
  // Two lines, one fd: sent by hand past send_sockets.
  std::string text = "sockets\ndata 127.0.0.1:1\ndata 127.0.0.1:2\n";
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  iovec iov{text.data(), text.size()};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof(ctl);
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  ASSERT_EQ(sendmsg(p.a, &m, 0), ssize_t(text.size()));
  EXPECT_FALSE(recv_sockets(p.b, std::chrono::milliseconds(1000)));
  ::close(fd);
  // An unknown role, and silence, are refused too.
  ASSERT_EQ(send(p.a, "sockets\nroot 127.0.0.1:1\n", 25, 0), 25);
  EXPECT_FALSE(recv_sockets(p.b, std::chrono::milliseconds(1000)));
  EXPECT_FALSE(recv_sockets(p.b, std::chrono::milliseconds(50)));
}

// After "done": client connections, one per message, each with its
// original destination and netns; what is not a TCP socket is closed, not
// adopted; "end" ends it.
TEST(HandoverWire, ClientConnectionsFollowWithTheirOriginalDestination) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds), 0);
  boost::asio::io_context io;
  struct Got {
    ino_t inode;
    net::Endpoint orig;
    uint64_t netns;
  };
  std::vector<Got> got;
  ConnectionReceiver rx(io, fds[1], [&](int fd, const net::Endpoint& orig, uint64_t netns) {
    got.push_back({inode(fd), orig, netns});
    ::close(fd);
  });
  rx.start();
  int tcp1 = socket(AF_INET, SOCK_STREAM, 0), tcp2 = socket(AF_INET, SOCK_STREAM, 0);
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  ino_t i1 = inode(tcp1), i2 = inode(tcp2);
  {
    ConnectionSender tx(fds[0]);
    EXPECT_TRUE(tx.pass(tcp1, {0x0a60000au, 9090}, 42));
    EXPECT_TRUE(tx.pass(pipefd[0], {0x0a60000au, 9091}, 43));  // not a socket: refused over there
    EXPECT_TRUE(tx.pass(tcp2, {0x0a60000bu, 20880}, 0));
    EXPECT_EQ(fcntl(tcp1, F_GETFD), -1) << "the sender closes its copy";
  }  // "end"
  io.run_for(std::chrono::seconds(2));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].inode, i1);
  EXPECT_EQ(got[0].orig, (net::Endpoint{0x0a60000au, 9090}));
  EXPECT_EQ(got[0].netns, 42u);
  EXPECT_EQ(got[1].inode, i2);
  EXPECT_EQ(got[1].orig, (net::Endpoint{0x0a60000bu, 20880}));
  // The pipe was closed over there too: its write end has no reader left.
  pollfd pw{pipefd[1], POLLOUT, 0};
  ASSERT_EQ(poll(&pw, 1, 0), 1);
  EXPECT_TRUE(pw.revents & POLLERR);
  ::close(pipefd[1]);
}

}  // namespace
}  // namespace metanode::core
