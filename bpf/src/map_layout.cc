#include "map_layout.h"

#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "metanode_abi.h"

namespace metanode::bpf {
namespace {

struct Known {
  const char* name;
  uint32_t id;
  uint32_t version;
};
constexpr Known kKnown[] = {
    {MN_MAP_SERVICES, MN_ID_SERVICES, MN_LAYOUT_V_SERVICES},
    {MN_MAP_PODS, MN_ID_PODS, MN_LAYOUT_V_PODS},
    {MN_MAP_CONFIG, MN_ID_CONFIG, MN_LAYOUT_V_CONFIG},
    {MN_MAP_ORIG_DST, MN_ID_ORIG_DST, MN_LAYOUT_V_ORIG_DST},
    {MN_MAP_TUPLE, MN_ID_TUPLE, MN_LAYOUT_V_TUPLE},
    {MN_MAP_SOCK_HASH, MN_ID_SOCK_HASH, MN_LAYOUT_V_SOCK_HASH},
    {MN_MAP_COUNTERS, MN_ID_COUNTERS, MN_LAYOUT_V_COUNTERS},
    {MN_MAP_EXCL, MN_ID_EXCL, MN_LAYOUT_V_EXCL},
};
static_assert(sizeof(kKnown) / sizeof(kKnown[0]) == MN_ID__COUNT, "every pinned map has a layout id");
static_assert(MN_ID__COUNT <= MN_LAYOUT_SLOTS, "mn_layout has a slot for every map");

// Entries are carried between equal entry layouts only. The registrations
// users made by hand must survive every upgrade: a version bump of either
// map needs its conversion from the previous version in carry() first.
static_assert(MN_LAYOUT_V_PODS == 1 && MN_LAYOUT_V_EXCL == 1,
              "mn_pods/mn_excl changed layout: add the conversion from the previous version");

const Known* known(const char* name) {
  for (const Known& k : kKnown)
    if (!std::strcmp(k.name, name)) return &k;
  return nullptr;
}

using Versions = std::array<uint32_t, MN_LAYOUT_SLOTS>;

// What the previous install recorded; an install from before mn_layout
// existed had version 1 of everything.
Versions read_versions(const std::string& pin_dir) {
  Versions v;
  v.fill(1);
  int fd = bpf_obj_get((pin_dir + "/" MN_MAP_LAYOUT).c_str());
  if (fd < 0) return v;
  for (uint32_t i = 0; i < MN_LAYOUT_SLOTS; ++i)
    if (bpf_map_lookup_elem(fd, &i, &v[i]) != 0) v[i] = 0;  // unknown: never matches
  close(fd);
  return v;
}

Result<void> write_versions(const std::string& pin_dir) {
  std::string path = pin_dir + "/" MN_MAP_LAYOUT;
  int fd = bpf_obj_get(path.c_str());
  if (fd >= 0) {
    bpf_map_info info{};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0 || info.type != BPF_MAP_TYPE_ARRAY ||
        info.key_size != 4 || info.value_size != 4 || info.max_entries != MN_LAYOUT_SLOTS) {
      close(fd);
      fd = -1;
      unlink(path.c_str());
    }
  }
  if (fd < 0) {
    fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, MN_MAP_LAYOUT, 4, 4, MN_LAYOUT_SLOTS, nullptr);
    if (fd < 0) return Error::errno_error("create " MN_MAP_LAYOUT);
    if (bpf_obj_pin(fd, path.c_str()) != 0) {
      int e = errno;
      close(fd);
      return Error::errno_error("pin " + path, e);
    }
  }
  for (const Known& k : kKnown) {
    if (bpf_map_update_elem(fd, &k.id, &k.version, BPF_ANY) != 0) {
      int e = errno;
      close(fd);
      return Error::errno_error("write " MN_MAP_LAYOUT, e);
    }
  }
  close(fd);
  return Ok();
}

// Maps whose entries userspace can read and write back. Socket storage and
// sockhash entries belong to sockets: they stay with the old map.
bool carryable(uint32_t type) {
  return type == BPF_MAP_TYPE_HASH || type == BPF_MAP_TYPE_LRU_HASH || type == BPF_MAP_TYPE_ARRAY ||
         type == BPF_MAP_TYPE_PERCPU_ARRAY;
}

bool per_cpu(uint32_t type) { return type == BPF_MAP_TYPE_PERCPU_ARRAY; }
bool array(uint32_t type) { return type == BPF_MAP_TYPE_ARRAY || type == BPF_MAP_TYPE_PERCPU_ARRAY; }

struct Carried {
  size_t copied = 0, dropped = 0;
};

// Calls f(key) for every key of a hash map, in the kernel's order.
template <class F>
void for_each_key(int fd, uint32_t key_size, F&& f) {
  std::vector<unsigned char> key(key_size), next(key_size);
  void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
    key.swap(next);
    prev = key.data();
    f(key.data());
  }
}

// Same entry layout, any capacity: every entry the new map has room for.
// Arrays by index (counters keep their numbers, metanode_abi.h); a hash
// entry the smaller map cannot take is counted as dropped.
Carried carry(int from, int to, const bpf_map_info& old, uint32_t new_max) {
  Carried c;
  size_t vsize = old.value_size;
  if (per_cpu(old.type)) vsize = ((vsize + 7) / 8 * 8) * size_t(std::max(libbpf_num_possible_cpus(), 1));
  std::vector<unsigned char> value(vsize);
  if (array(old.type)) {
    for (uint32_t i = 0; i < old.max_entries; ++i) {
      bool ok = i < new_max && bpf_map_lookup_elem(from, &i, value.data()) == 0 &&
                bpf_map_update_elem(to, &i, value.data(), BPF_ANY) == 0;
      ++(ok ? c.copied : c.dropped);
    }
    return c;
  }
  for_each_key(from, old.key_size, [&](const void* key) {
    if (bpf_map_lookup_elem(from, key, value.data()) != 0) return;  // gone meanwhile
    ++(bpf_map_update_elem(to, key, value.data(), BPF_NOEXIST) == 0 ? c.copied : c.dropped);
  });
  return c;
}

size_t count_entries(int fd, uint32_t key_size) {
  size_t n = 0;
  for_each_key(fd, key_size, [&](const void*) { ++n; });
  return n;
}

}  // namespace

LayoutMigration::LayoutMigration(LayoutMigration&& o) noexcept
    : pin_dir_(std::move(o.pin_dir_)), retired_(std::move(o.retired_)) {
  o.retired_.clear();
}

LayoutMigration::~LayoutMigration() {
  for (auto& r : retired_)
    if (r.fd >= 0) close(r.fd);
}

Result<LayoutMigration> LayoutMigration::prepare(bpf_object* obj, const std::string& pin_dir) {
  LayoutMigration mig;
  mig.pin_dir_ = pin_dir;
  Versions have = read_versions(pin_dir);
  bpf_map* m = nullptr;
  bpf_object__for_each_map(m, obj) {
    const char* path = bpf_map__pin_path(m);
    if (!path) continue;
    int fd = bpf_obj_get(path);
    if (fd < 0) continue;  // not pinned yet: libbpf creates it
    bpf_map_info info{};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
      int e = errno;
      close(fd);
      mig.restore();
      return Error::errno_error(std::string("inspect pinned ") + path, e);
    }
    const Known* k = known(bpf_map__name(m));
    uint32_t want = k ? k->version : 1, had = k ? have[k->id] : 1;
    // The geometry libbpf itself insists on to reuse a pin, plus what only
    // the version can tell: the same sizes with other meanings.
    bool same = info.type == uint32_t(bpf_map__type(m)) && info.key_size == bpf_map__key_size(m) &&
                info.value_size == bpf_map__value_size(m) &&
                info.max_entries == bpf_map__max_entries(m) && info.map_flags == bpf_map__map_flags(m) &&
                had == want;
    if (same) {
      close(fd);
      continue;
    }
    if (unlink(path) != 0) {
      int e = errno;
      close(fd);
      mig.restore();
      return Error::errno_error(std::string("unpin ") + path, e);
    }
    mig.retired_.push_back({bpf_map__name(m), path, fd, info, had});
  }
  return mig;
}

void LayoutMigration::restore() {
  for (auto& r : retired_) {
    unlink(r.path.c_str());  // a new map libbpf may have pinned there
    bpf_obj_pin(r.fd, r.path.c_str());
  }
}

Result<std::string> LayoutMigration::finish(bpf_object* obj) {
  std::string notes;
  for (auto& r : retired_) {
    bpf_map* m = bpf_object__find_map_by_name(obj, r.name.c_str());
    const Known* k = known(r.name.c_str());
    uint32_t want = k ? k->version : 1;
    std::string what = r.name + " (layout v" + std::to_string(r.version) + " -> v" + std::to_string(want) +
                       ", " + std::to_string(r.info.max_entries) + " -> " +
                       std::to_string(m ? bpf_map__max_entries(m) : 0) + " entries)";
    if (!m || bpf_map__fd(m) < 0) continue;
    if (!carryable(r.info.type)) {
      notes += what + " replaced; its entries stay with the sockets that hold them; ";
      continue;
    }
    bool same_entries = r.version == want && r.info.type == uint32_t(bpf_map__type(m)) &&
                        r.info.key_size == bpf_map__key_size(m) && r.info.value_size == bpf_map__value_size(m);
    if (!same_entries) {
      // Only maps the daemon refills from its configuration get here (the
      // static_assert above keeps mn_pods and mn_excl out).
      notes += what + " replaced: no conversion, " + std::to_string(count_entries(r.fd, r.info.key_size)) +
               " entries left for the daemon to rewrite; ";
      continue;
    }
    Carried c = carry(r.fd, bpf_map__fd(m), r.info, bpf_map__max_entries(m));
    notes += what + " migrated: " + std::to_string(c.copied) + " entries carried";
    if (c.dropped) notes += ", " + std::to_string(c.dropped) + " without room DROPPED";
    notes += "; ";
  }
  if (auto w = write_versions(pin_dir_); !w) return w.error();
  return notes;
}

}  // namespace metanode::bpf
