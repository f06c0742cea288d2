// In-memory Maps for unit tests of control logic (no kernel, no root).
#include "metanode/bpf/maps.h"

namespace metanode::bpf {

Result<void> FakeMaps::configure(const RuntimeConfig&) {
  ++writes_;
  return Ok();
}
Result<void> FakeMaps::heartbeat() { return Ok(); }
Result<void> FakeMaps::disable() {
  ++writes_;
  return Ok();
}
Result<void> FakeMaps::upsert_service(net::Endpoint vip, uint32_t id) {
  services_[vip] = id;
  ++writes_;
  return Ok();
}
Result<void> FakeMaps::remove_service(net::Endpoint vip) {
  services_.erase(vip);
  ++writes_;
  return Ok();
}
Result<std::map<net::Endpoint, uint32_t>> FakeMaps::services() { return services_; }
Result<OrigDst> FakeMaps::original_dst(int fd) {
  auto it = orig_.find(fd);
  if (it == orig_.end())
    return Error{std::make_error_code(std::errc::no_such_file_or_directory), "no orig dst"};
  return it->second;
}
Result<std::vector<Counter>> FakeMaps::counters() { return std::vector<Counter>{}; }
Result<void> FakeMaps::set_pod(uint64_t netns, uint32_t flags) {
  pods_[netns] = flags;
  return Ok();
}
Result<void> FakeMaps::remove_pod(uint64_t netns) {
  pods_.erase(netns);
  return Ok();
}
Result<std::map<uint64_t, uint32_t>> FakeMaps::pods() { return pods_; }
Result<void> FakeMaps::exclude_port(uint64_t netns, uint16_t port, bool excluded) {
  std::erase(excl_, std::pair(netns, port));
  if (excluded) excl_.emplace_back(netns, port);
  return Ok();
}
Result<std::vector<std::pair<uint64_t, uint16_t>>> FakeMaps::excluded_ports() { return excl_; }

}  // namespace metanode::bpf
