// The parts of Kubernetes Pod and Namespace objects the daemon acts on, read
// from the API server's JSON, and the two decisions made from them: whether a
// pod is enrolled in metanode, and the workload it belongs to (Istio's
// source_workload).
#pragma once

#include <boost/json/value.hpp>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "metanode/result.h"

namespace metanode::kube {

struct ObjectMeta {
  std::string name, namespace_, uid, resource_version;
  std::map<std::string, std::string> labels, annotations;
  bool deleting = false;  // deletionTimestamp set: terminating, still running
};

struct OwnerRef {
  std::string kind, name;
  bool controller = false;
};

struct Pod {
  ObjectMeta meta;
  std::vector<OwnerRef> owners;
  std::string node_name, service_account, phase;
  std::vector<std::string> containers;  // spec.containers[].name
  bool host_network = false;
  std::vector<uint32_t> ipv4;  // status.podIPs (host order); IPv6 ones are not kept yet
};

struct Namespace {
  ObjectMeta meta;
};

// Errors name the field that is missing or of the wrong type.
Result<ObjectMeta> parse_meta(const boost::json::value& object);
Result<Pod> parse_pod(const boost::json::value& object);
Result<Namespace> parse_namespace(const boost::json::value& object);

// The label that enrolls a namespace or a pod, and its two values (Istio's
// ambient mode uses the same key with "ambient").
inline constexpr char kDataplaneModeLabel[] = "istio.io/dataplane-mode";
inline constexpr char kEnrolledValue[] = "metanode";
inline constexpr char kOptOutValue[] = "none";

struct Enrollment {
  bool enrolled = false;
  const char* reason = "";  // why, for logs and explain
};
// `ns` may be null (not seen yet: no namespace label applies).
Enrollment enrollment(const Pod& pod, const Namespace* ns);

// The workload a pod belongs to, as Istio names it: the Deployment of a
// ReplicaSet-owned pod (the pod-template-hash suffix removed), the CronJob
// of a Job created by one, else the controlling owner, else the pod itself.
std::string workload_name(const Pod& pod);
// Istio's app and version labels, with the Kubernetes recommended labels as
// fallback; "" when neither is set.
std::string app_label(const Pod& pod);
std::string version_label(const Pod& pod);
// Istio's canonical service and revision of a pod, as its proxies report
// them: the service.istio.io/canonical-* labels, then the recommended and
// app/version labels; else the workload's name and "latest".
std::string canonical_service(const Pod& pod);
std::string canonical_revision(const Pod& pod);

}  // namespace metanode::kube
