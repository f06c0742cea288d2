/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metanode_abi.h - the one contract between the eBPF programs and metanoded.
 *
 * Included by bpf/metanode.bpf.c (after vmlinux.h) and by the C++ loader.
 * Only fixed-width kernel types, explicit padding and size assertions on both
 * sides, so a struct can never be "in sync by convention".
 *
 * Byte order: every address and port in these structs is in NETWORK order,
 * exactly as the kernel hands them to sock_addr programs; userspace converts
 * once at the boundary (bpf/src/maps.cc).
 */
#ifndef METANODE_ABI_H
#define METANODE_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Pinned under <bpffs>/metanode/ by default. Kernel object names are at most
 * 15 characters, so every name below fits and bpftool shows it in full. */
#define MN_PIN_DIR_DEFAULT "/sys/fs/bpf/metanode"

#define MN_MAP_SERVICES "mn_services"
#define MN_MAP_PODS "mn_pods"
#define MN_MAP_CONFIG "mn_config"
#define MN_MAP_ORIG_DST "mn_orig_dst"
#define MN_MAP_TUPLE "mn_tuple"
#define MN_MAP_SOCK_HASH "mn_sock_hash"
#define MN_MAP_COUNTERS "mn_counters"
#define MN_MAP_EXCL "mn_excl"

/* mn_layout: array indexed by enum mn_map_id, each value the layout version
 * of that pinned map. Pinned maps outlive the daemon that made them; a new
 * daemon reuses a map whose version and geometry match its own and replaces
 * any other with a fresh one, carrying its entries over (map_layout.cc), so
 * an upgrade never loses the pods and exclusions registered by hand.
 * Installs from before mn_layout existed read as version 1 everywhere.
 * Bump a map's version whenever the meaning or size of its key or value
 * changes; capacity (max_entries) changes need no bump. Userspace only:
 * no program reads it. */
#define MN_MAP_LAYOUT "mn_layout"
#define MN_LAYOUT_SLOTS 32 /* never changes */

enum mn_map_id {
	MN_ID_SERVICES = 0,
	MN_ID_PODS = 1,
	MN_ID_CONFIG = 2,
	MN_ID_ORIG_DST = 3,
	MN_ID_TUPLE = 4,
	MN_ID_SOCK_HASH = 5,
	MN_ID_COUNTERS = 6,
	MN_ID_EXCL = 7,
	MN_ID__COUNT = 8
};

#define MN_LAYOUT_V_SERVICES 1
#define MN_LAYOUT_V_PODS 1
#define MN_LAYOUT_V_CONFIG 1
#define MN_LAYOUT_V_ORIG_DST 1
#define MN_LAYOUT_V_TUPLE 1
#define MN_LAYOUT_V_SOCK_HASH 1
#define MN_LAYOUT_V_COUNTERS 1
#define MN_LAYOUT_V_EXCL 1

#define MN_MAX_SERVICES 65536
#define MN_MAX_PODS 16384
#define MN_MAX_TUPLES 65536
#define MN_MAX_SOCKS 131072
#define MN_MAX_EXCL 4096

/* SO_MARK the daemon puts on every socket it connects itself. connect4 never
 * redirects a socket carrying it: without this the daemon's upstream connect
 * to a VIP would be sent back to the daemon, forever. */
#define MN_DAEMON_MARK 0x6d6e0001u

/* mn_services: key = destination a pod connects to (the service VIP:port),
 * value = what the daemon registered for it. Written by the daemon from its
 * listeners; read by connect4. */
struct mn_svc_key {
	__u32 addr; /* IPv4, network order */
	__u16 port; /* network order */
	__u16 pad;
};

#define MN_SVC_F_ENABLED 0x1u

struct mn_svc_val {
	__u32 flags;
	__u32 listener_id; /* opaque to the kernel; shown by metanodectl */
};

/* mn_pods: key = network namespace cookie of a pod, value = policy. */
#define MN_POD_F_MANAGED 0x1u /* intercept this pod's connects */
#define MN_POD_F_OPT_OUT 0x2u /* never intercept, even in manage-all mode */

struct mn_pod_val {
	__u32 flags;
	__u32 pad;
};

/* mn_config: array with a single entry, written only by the daemon. */
#define MN_CFG_F_ENABLED 0x1u    /* master switch for connect redirection */
#define MN_CFG_F_ALL_NETNS 0x2u  /* every non-host netns is a managed pod */
#define MN_CFG_F_SKMSG 0x4u      /* put redirected sockets into mn_sock_hash */
#define MN_CFG_F_HOST_NETNS 0x8u /* also manage the host netns (tests only) */
#define MN_CFG_F_SKMSG_UPSTREAM 0x10u /* also daemon<->upstream when both ends are local */

struct mn_config {
	__u32 redirect_addr; /* where pods reach the daemon, network order */
	__u16 redirect_port; /* network order */
	__u16 pad0;
	__u32 flags;
	__u32 daemon_mark;
	/* Liveness: the daemon stores bpf_ktime_get_ns()-compatible
	 * CLOCK_MONOTONIC time here periodically. connect4 redirects only while
	 * now - heartbeat_ns < liveness_ns, so a dead daemon means pods talk to
	 * their original destination, not to a closed port. */
	__u64 heartbeat_ns;
	__u64 liveness_ns;
	__u64 generation; /* bumped by every daemon start, for inspection */
};

/* mn_orig_dst: socket-local storage. On a pod's client socket it is created
 * by connect4; on the daemon's accepted socket it is created by sockops at
 * PASSIVE_ESTABLISHED. The daemon reads it with a lookup keyed by its fd. */
#define MN_ORIG_F_REDIRECTED 0x1u /* set on the client socket */
#define MN_ORIG_F_ACCEPTED 0x2u   /* set on the daemon's accepted socket */
#define MN_ORIG_F_UPSTREAM 0x4u   /* mn_tuple only: a daemon upstream connect, no redirect */
#define MN_ORIG_F_TCP_ONLY 0x8u   /* a message of this socket took the TCP path: stay on it */

struct mn_orig_dst {
	__u32 addr; /* original destination IPv4, network order */
	__u16 port; /* network order */
	__u16 flags;
	__u64 pod_netns; /* netns cookie of the connecting pod */
};

/* mn_tuple (LRU hash) and mn_sock_hash keys: a TCP 4-tuple as seen from one
 * end, plus the netns cookie when the tuple is loopback (127/8), because two
 * namespaces can hold identical loopback tuples. 0 otherwise, so both ends
 * of a pod<->daemon connection, which live in different namespaces, compute
 * the same key. mn_tuple holds the client's view (src = pod, dst = daemon)
 * between ACTIVE_ESTABLISHED and PASSIVE_ESTABLISHED, and for the daemon's
 * userspace fallback when its socket was not seen by sockops. */
struct mn_tuple_key {
	__u32 saddr; /* network order */
	__u32 daddr; /* network order */
	__u16 sport; /* network order */
	__u16 dport; /* network order */
	__u32 pad;
	__u64 netns;
};

/* mn_excl: destination ports never intercepted, per pod (netns cookie) or
 * for every pod (netns 0). Writer: daemon (--exclude-ports, metanodectl). */
struct mn_excl_key {
	__u64 netns; /* 0: all pods */
	__u16 port;  /* network order */
	__u16 pad[3];
};

/* mn_counters: per-CPU array of __u64 indexed by these values. Every path
 * that decides not to act counts here, so "why was this not intercepted"
 * always has an answer in `metanodectl bpf`. The numbers are ABI: counts
 * are carried across upgrades by index (bpf/src/map_layout.cc), so a new
 * counter goes at the end and a retired one keeps its number. */
enum mn_counter {
	MN_C_CONNECT_SEEN = 0,
	MN_C_REDIRECTED = 1,
	MN_C_SKIP_NOT_TCP = 2,
	MN_C_SKIP_NOT_SERVICE = 3,
	MN_C_SKIP_DAEMON_SOCK = 4,
	MN_C_SKIP_HOST_NETNS = 5,
	MN_C_SKIP_NOT_POD = 6,
	MN_C_SKIP_DAEMON_DOWN = 7,
	MN_C_SKIP_DISABLED = 8,
	MN_C_ERR_NO_CONFIG = 9,
	MN_C_ERR_STORAGE = 10,
	MN_C_OPS_ACTIVE = 11,
	MN_C_OPS_PASSIVE = 12,
	MN_C_OPS_PASSIVE_MISS = 13,
	MN_C_ERR_TUPLE = 14,
	MN_C_ERR_SOCKHASH = 15,
	MN_C_MSG_REDIRECT = 16,
	MN_C_MSG_PASS = 17,
	MN_C_PEERNAME = 18,
	MN_C_SKIP_EXCLUDED_PORT = 19,
	MN_C_SKIP_NOT_V4MAPPED = 20,
	MN_C_ORIG_DST_SOCKOPT = 21,
	MN_C_OPS_UPSTREAM = 22,
	MN_C_OPS_UPSTREAM_PEER = 23,
	MN_C__COUNT = 24
};

#define MN_COUNTER_NAMES                                                       \
	"connect_seen", "redirected", "skip_not_tcp", "skip_not_service",      \
	    "skip_daemon_sock", "skip_host_netns", "skip_not_pod",             \
	    "skip_daemon_down", "skip_disabled", "err_no_config",              \
	    "err_storage", "sockops_active", "sockops_passive",                \
	    "sockops_passive_miss", "err_tuple", "err_sockhash",               \
	    "msg_redirect", "msg_pass", "getpeername_rewrite",                 \
	    "skip_excluded_port", "skip_not_v4mapped", "so_original_dst",      \
	    "sockops_upstream", "sockops_upstream_peer"

#ifdef __cplusplus
#define MN_STATIC_ASSERT static_assert
#else
#define MN_STATIC_ASSERT _Static_assert
#endif
MN_STATIC_ASSERT(sizeof(struct mn_svc_key) == 8, "mn_svc_key ABI");
MN_STATIC_ASSERT(sizeof(struct mn_svc_val) == 8, "mn_svc_val ABI");
MN_STATIC_ASSERT(sizeof(struct mn_pod_val) == 8, "mn_pod_val ABI");
MN_STATIC_ASSERT(sizeof(struct mn_config) == 40, "mn_config ABI");
MN_STATIC_ASSERT(sizeof(struct mn_orig_dst) == 16, "mn_orig_dst ABI");
MN_STATIC_ASSERT(sizeof(struct mn_tuple_key) == 24, "mn_tuple_key ABI");
MN_STATIC_ASSERT(sizeof(struct mn_excl_key) == 16, "mn_excl_key ABI");

#endif /* METANODE_ABI_H */
