// The node's pods and the cluster's namespaces as the API server last told
// us, fed by two reflectors. Everything else (which network namespaces are
// managed, who a client is) is computed from it.
#pragma once

#include <boost/json/value.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "metanode/kube/objects.h"
#include "metanode/kube/reflector.h"

namespace metanode::kube {

class PodDirectory {
 public:
  // At most this many objects of each kind are kept; more (a node has ~110
  // pods, a cluster thousands of namespaces) are refused and counted as
  // rejected, so a broken API server cannot grow the daemon without bound.
  explicit PodDirectory(size_t max_pods = 5000, size_t max_namespaces = 100000)
      : max_pods_(max_pods), max_namespaces_(max_namespaces) {}

  // The reflectors' handlers.
  ReflectorHandler pod_handler();
  ReflectorHandler namespace_handler();

  const std::map<std::string, Pod>& pods() const { return pods_; }  // key: namespace/name
  const Namespace* find_namespace(const std::string& name) const;
  Enrollment enrollment(const Pod& p) const { return kube::enrollment(p, find_namespace(p.meta.namespace_)); }

  uint64_t generation() const { return generation_; }  // bumped by every change
  uint64_t rejected() const { return rejected_; }      // objects that did not parse
  std::function<void()> on_change;                     // after every change

 private:
  void changed();
  std::map<std::string, Pod> pods_;
  std::map<std::string, Namespace> namespaces_;
  size_t max_pods_, max_namespaces_;
  uint64_t generation_ = 0, rejected_ = 0;
};

}  // namespace metanode::kube
