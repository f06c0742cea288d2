// The node's pod network namespaces, from the files the container runtime
// keeps for them (containerd and CRI-O: /var/run/netns/cni-*), kept in
// mn_pods. Without a policy every file found is a managed pod (--pods
// netns-dir); with one (--pods kubernetes), a namespace is managed while the
// policy says so, judged on its addresses: the API server knows pods by IP,
// not by namespace file. A file that disappears is forgotten. Entries
// someone opted out (metanodectl pod add --opt-out) are never touched.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "metanode/bpf/maps.h"
#include "metanode/result.h"

namespace metanode::core {

class PodWatcher {
 public:
  using ProbeFn = std::function<Result<bpf::NetnsInfo>(const std::string& netns_path)>;
  using PolicyFn = std::function<bool(const bpf::NetnsInfo&)>;

  PodWatcher(bpf::Maps& maps, std::string dir, std::string prefix, ProbeFn probe = bpf::netns_info,
             PolicyFn policy = nullptr);

  // One pass over the directory, and the policy applied again to every
  // namespace known: how many became managed and stopped being managed.
  struct Change {
    int added = 0, removed = 0, failed = 0;
    int seen = 0;  // namespaces found, gone, or whose addresses were learned
  };
  Change sync();

  struct Entry {
    std::string path;
    bpf::NetnsInfo info;
    bool managed = false;  // we put it in mn_pods
  };
  // By file identity (name:inode).
  const std::map<std::string, Entry>& entries() const { return by_file_; }

 private:
  bool set_managed(Entry& e, bool want);
  bpf::Maps& maps_;
  std::string dir_, prefix_;
  ProbeFn probe_;
  PolicyFn policy_;
  std::map<std::string, Entry> by_file_;
};

}  // namespace metanode::core
