#include "metanode/kube/pod_directory.h"

#include <spdlog/spdlog.h>

#include <optional>

namespace metanode::kube {

namespace {
std::string key(const ObjectMeta& m) { return m.namespace_ + "/" + m.name; }

// The same steps for both kinds: parse, then replace or apply the event.
template <class T, class Parse>
ReflectorHandler handler(std::map<std::string, T>& store, size_t max, uint64_t& rejected, Parse parse,
                         std::function<void()> changed, const char* kind) {
  auto parse_one = [&rejected, parse, kind](const boost::json::value& v) -> std::optional<T> {
    auto r = parse(v);
    if (r) return std::move(*r);
    ++rejected;
    spdlog::warn("{} from the API server ignored: {}", kind, r.error().message());
    return std::nullopt;
  };
  ReflectorHandler h;
  auto full = [&rejected, max, kind](const std::map<std::string, T>& m, const std::string& k) {
    if (m.size() < max || m.count(k)) return false;
    if (rejected++ % 1000 == 0) spdlog::warn("more than {} {}s from the API server: the rest ignored", max, kind);
    return true;
  };
  h.replace = [&store, parse_one, changed, full](const std::vector<boost::json::value>& items) {
    std::map<std::string, T> next;
    for (const auto& v : items)
      if (auto o = parse_one(v)) {
        std::string k = key(o->meta);
        if (!full(next, k)) next.insert_or_assign(std::move(k), std::move(*o));
      }
    store = std::move(next);
    changed();
  };
  h.event = [&store, parse_one, changed, full](EventType t, const boost::json::value& v) {
    auto o = parse_one(v);
    if (!o) return;
    std::string k = key(o->meta);
    if (t == EventType::kDeleted) store.erase(k);
    else if (!full(store, k)) store.insert_or_assign(std::move(k), std::move(*o));
    else return;
    changed();
  };
  return h;
}
}  // namespace

void PodDirectory::changed() {
  ++generation_;
  if (on_change) on_change();
}

ReflectorHandler PodDirectory::pod_handler() {
  return handler(pods_, max_pods_, rejected_, parse_pod, [this] { changed(); }, "pod");
}

ReflectorHandler PodDirectory::namespace_handler() {
  return handler(namespaces_, max_namespaces_, rejected_, parse_namespace, [this] { changed(); }, "namespace");
}

const Namespace* PodDirectory::find_namespace(const std::string& name) const {
  auto it = namespaces_.find("/" + name);  // namespaces have no namespace: key "/name"
  return it == namespaces_.end() ? nullptr : &it->second;
}

}  // namespace metanode::kube
