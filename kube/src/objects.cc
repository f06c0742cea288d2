#include "metanode/kube/objects.h"

#include <algorithm>
#include <boost/json.hpp>

#include "metanode/net.h"

namespace metanode::kube {
namespace json = boost::json;

namespace {

// Lookups that never throw: a missing or mistyped field is an empty value.
const json::object* object_at(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  return it == o.end() ? nullptr : it->value().if_object();
}
const json::array* array_at(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  return it == o.end() ? nullptr : it->value().if_array();
}
std::string string_at(const json::object* o, std::string_view key) {
  if (!o) return {};
  auto it = o->find(key);
  if (it == o->end()) return {};
  const json::string* s = it->value().if_string();
  return s ? std::string(*s) : std::string();
}
bool bool_at(const json::object* o, std::string_view key) {
  if (!o) return false;
  auto it = o->find(key);
  if (it == o->end()) return false;
  const bool* b = it->value().if_bool();
  return b && *b;
}
std::map<std::string, std::string> string_map(const json::object* o) {
  std::map<std::string, std::string> out;
  if (!o) return out;
  for (const auto& kv : *o)
    if (const json::string* s = kv.value().if_string()) out.emplace(std::string(kv.key()), std::string(*s));
  return out;
}

const std::string* label(const ObjectMeta& m, const std::string& key) {
  auto it = m.labels.find(key);
  return it == m.labels.end() ? nullptr : &it->second;
}

// A trailing "-<digits>" (the scheduled time a CronJob names its Jobs by).
bool ends_with_dash_digits(const std::string& s) {
  auto dash = s.rfind('-');
  if (dash == std::string::npos || dash + 1 == s.size()) return false;
  for (size_t i = dash + 1; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

}  // namespace

Result<ObjectMeta> parse_meta(const json::value& v) {
  const json::object* o = v.if_object();
  if (!o) return Error::invalid("not a JSON object");
  const json::object* m = object_at(*o, "metadata");
  if (!m) return Error::invalid("no metadata");
  ObjectMeta meta;
  meta.name = string_at(m, "name");
  if (meta.name.empty()) return Error::invalid("no metadata.name");
  meta.namespace_ = string_at(m, "namespace");
  meta.uid = string_at(m, "uid");
  meta.resource_version = string_at(m, "resourceVersion");
  meta.labels = string_map(object_at(*m, "labels"));
  meta.annotations = string_map(object_at(*m, "annotations"));
  auto del = m->find("deletionTimestamp");
  meta.deleting = del != m->end() && !del->value().is_null();
  return meta;
}

Result<Pod> parse_pod(const json::value& v) {
  auto meta = parse_meta(v);
  if (!meta) return Error::invalid("pod: " + meta.error().message());
  Pod p;
  p.meta = std::move(*meta);
  if (p.meta.namespace_.empty()) return Error::invalid("pod " + p.meta.name + ": no metadata.namespace");
  const json::object& o = v.get_object();
  const json::object* m = object_at(o, "metadata");
  if (const json::array* owners = array_at(*m, "ownerReferences"))
    for (const auto& ov : *owners)
      if (const json::object* ref = ov.if_object())
        p.owners.push_back({string_at(ref, "kind"), string_at(ref, "name"), bool_at(ref, "controller")});
  const json::object* spec = object_at(o, "spec");
  p.node_name = string_at(spec, "nodeName");
  p.service_account = string_at(spec, "serviceAccountName");
  if (p.service_account.empty()) p.service_account = string_at(spec, "serviceAccount");
  if (p.service_account.empty()) p.service_account = "default";
  p.host_network = bool_at(spec, "hostNetwork");
  if (spec)
    if (const json::array* cs = array_at(*spec, "containers"))
      for (const auto& c : *cs) p.containers.push_back(string_at(c.if_object(), "name"));
  const json::object* status = object_at(o, "status");
  p.phase = string_at(status, "phase");
  auto add_ip = [&p](const std::string& s) {
    auto a = net::parse_ipv4(s);
    if (a && std::find(p.ipv4.begin(), p.ipv4.end(), *a) == p.ipv4.end()) p.ipv4.push_back(*a);
  };
  if (status) {
    if (const json::array* ips = array_at(*status, "podIPs"))
      for (const auto& ip : *ips) add_ip(string_at(ip.if_object(), "ip"));
    add_ip(string_at(status, "podIP"));  // older servers set only this one
  }
  return p;
}

Result<Namespace> parse_namespace(const json::value& v) {
  auto meta = parse_meta(v);
  if (!meta) return Error::invalid("namespace: " + meta.error().message());
  return Namespace{std::move(*meta)};
}

Enrollment enrollment(const Pod& pod, const Namespace* ns) {
  // The node's own network: intercepting it would take the daemon's and
  // the kubelet's traffic too.
  if (pod.host_network) return {false, "hostNetwork pod"};
  // A pod with its own Envoy is already meshed: two proxies in a row would
  // route every call twice.
  if (pod.meta.annotations.count("sidecar.istio.io/status")) return {false, "sidecar injected"};
  for (const auto& c : pod.containers)
    if (c == "istio-proxy") return {false, "sidecar injected"};
  if (pod.phase == "Succeeded" || pod.phase == "Failed") return {false, "pod finished"};
  if (const std::string* v = label(pod.meta, kDataplaneModeLabel)) {
    if (*v == kOptOutValue) return {false, "pod label istio.io/dataplane-mode=none"};
    if (*v == kEnrolledValue) return {true, "pod label istio.io/dataplane-mode=metanode"};
  }
  if (ns)
    if (const std::string* v = label(ns->meta, kDataplaneModeLabel); v && *v == kEnrolledValue)
      return {true, "namespace label istio.io/dataplane-mode=metanode"};
  return {false, "no istio.io/dataplane-mode=metanode label on the pod or its namespace"};
}

std::string workload_name(const Pod& pod) {
  const OwnerRef* owner = nullptr;
  for (const auto& o : pod.owners)
    if (o.controller) owner = &o;
  if (!owner && !pod.owners.empty()) owner = &pod.owners.front();
  if (!owner) return pod.meta.name;
  if (owner->kind == "ReplicaSet") {
    const std::string* hash = label(pod.meta, "pod-template-hash");
    if (hash && owner->name.size() > hash->size() + 1 &&
        owner->name.compare(owner->name.size() - hash->size() - 1, std::string::npos, "-" + *hash) == 0)
      return owner->name.substr(0, owner->name.size() - hash->size() - 1);
  }
  if (owner->kind == "Job" && ends_with_dash_digits(owner->name))
    return owner->name.substr(0, owner->name.rfind('-'));
  return owner->name;
}

std::string app_label(const Pod& pod) {
  for (const char* k : {"app", "app.kubernetes.io/name"})
    if (const std::string* v = label(pod.meta, k)) return *v;
  return {};
}

std::string version_label(const Pod& pod) {
  for (const char* k : {"version", "app.kubernetes.io/version"})
    if (const std::string* v = label(pod.meta, k)) return *v;
  return {};
}

std::string canonical_service(const Pod& pod) {
  for (const char* k : {"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"})
    if (const std::string* v = label(pod.meta, k)) return *v;
  return workload_name(pod);
}

std::string canonical_revision(const Pod& pod) {
  for (const char* k : {"service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"})
    if (const std::string* v = label(pod.meta, k)) return *v;
  return "latest";
}

}  // namespace metanode::kube
