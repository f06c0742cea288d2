// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * metanode.bpf.c - connect interception and socket-to-socket payload path.
 *
 *   cgroup/connect4      pod connects to a mesh VIP:port -> rewritten to the
 *                        daemon's redirect address; original destination kept
 *                        in the socket's mn_orig_dst storage.
 *   cgroup/getpeername4  the pod keeps seeing the VIP as its peer.
 *   sockops              ACTIVE_ESTABLISHED (pod side) publishes the tuple;
 *                        PASSIVE_ESTABLISHED (daemon side) copies the original
 *                        destination onto the accepted socket; both sockets
 *                        enter mn_sock_hash.
 *   sk_msg               bytes written on one end go straight to the other
 *                        end's receive queue: no TCP/IP stack, no veth.
 *
 * Every hook fails open: whatever goes wrong, the connect or the message
 * proceeds unchanged and a per-CPU counter says why.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "metanode_abi.h"

#define AF_INET 2
#define SOCK_STREAM 1
#define SK_PASS 1

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* VIP:port -> registration. Writer: daemon (from listeners). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MN_MAX_SERVICES);
	__type(key, struct mn_svc_key);
	__type(value, struct mn_svc_val);
} mn_services SEC(".maps");

/* netns cookie -> pod policy. Writer: daemon. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MN_MAX_PODS);
	__type(key, __u64);
	__type(value, struct mn_pod_val);
} mn_pods SEC(".maps");

/* Single entry. Writer: daemon (config at start, heartbeat periodically). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mn_config);
} mn_config SEC(".maps");

/* Per-socket original destination. Writers: connect4, sockops. Freed by the
 * kernel with the socket, so it cannot leak. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mn_orig_dst);
} mn_orig_dst SEC(".maps");

/* Client-view tuple -> original destination, alive between the two ends'
 * ESTABLISHED callbacks. LRU so a daemon socket that sockops never sees
 * (daemon outside the attached cgroup) cannot make it grow without bound;
 * the daemon deletes what it consumes through the fallback path. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MN_MAX_TUPLES);
	__type(key, struct mn_tuple_key);
	__type(value, struct mn_orig_dst);
} mn_tuple SEC(".maps");

/* Sockets eligible for sk_msg redirection, keyed by their own view of the
 * tuple. The kernel removes a socket from it when the socket closes. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MN_MAX_SOCKS);
	__type(key, struct mn_tuple_key);
	__type(value, __u64);
} mn_sock_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MN_C__COUNT);
	__type(key, __u32);
	__type(value, __u64);
} mn_counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&mn_counters, &idx);

	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

static __always_inline struct mn_config *mn_cfg(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&mn_config, &zero);
}

static __always_inline int is_loopback(__u32 addr_be)
{
	return (bpf_ntohl(addr_be) >> 24) == 127;
}

/* sock_ops and sk_msg expose remote_port as the big-endian 16-bit port
 * shifted into the upper half of a host-order u32, local_port in host order.
 * Normalise both to a network-order u16. */
static __always_inline __u16 remote_port_be(__u32 remote_port)
{
	return bpf_htons((__u16)bpf_ntohl(remote_port));
}

static __always_inline __u16 local_port_be(__u32 local_port)
{
	return bpf_htons((__u16)local_port);
}

SEC("cgroup/connect4")
int mn_connect4(struct bpf_sock_addr *ctx)
{
	struct mn_svc_key key = {};
	struct mn_orig_dst *orig;
	struct mn_config *cfg;
	struct bpf_sock *sk;
	__u64 netns;

	count(MN_C_CONNECT_SEEN);
	if (ctx->type != SOCK_STREAM) {
		count(MN_C_SKIP_NOT_TCP);
		return 1;
	}
	cfg = mn_cfg();
	if (!cfg) {
		count(MN_C_ERR_NO_CONFIG);
		return 1;
	}
	if (!(cfg->flags & MN_CFG_F_ENABLED)) {
		count(MN_C_SKIP_DISABLED);
		return 1;
	}

	/* Cheapest selective test first: most connects are not to a mesh VIP. */
	key.addr = ctx->user_ip4;
	key.port = (__u16)ctx->user_port;
	if (!bpf_map_lookup_elem(&mn_services, &key)) {
		count(MN_C_SKIP_NOT_SERVICE);
		return 1;
	}

	sk = ctx->sk;
	if (!sk)
		return 1;
	if (sk->mark == cfg->daemon_mark) {
		count(MN_C_SKIP_DAEMON_SOCK);
		return 1;
	}

	netns = bpf_get_netns_cookie(ctx);
	if (netns == bpf_get_netns_cookie(NULL) && !(cfg->flags & MN_CFG_F_HOST_NETNS)) {
		count(MN_C_SKIP_HOST_NETNS);
		return 1;
	}
	{
		struct mn_pod_val *pod = bpf_map_lookup_elem(&mn_pods, &netns);
		int managed = (cfg->flags & MN_CFG_F_ALL_NETNS) != 0;

		if (pod)
			managed = (pod->flags & MN_POD_F_MANAGED) && !(pod->flags & MN_POD_F_OPT_OUT);
		if (!managed) {
			count(MN_C_SKIP_NOT_POD);
			return 1;
		}
	}

	/* A daemon that stopped heartbeating is treated as gone: the pod then
	 * connects where it asked to, instead of to a dead port. */
	if (bpf_ktime_get_ns() - cfg->heartbeat_ns > cfg->liveness_ns) {
		count(MN_C_SKIP_DAEMON_DOWN);
		return 1;
	}

	orig = bpf_sk_storage_get(&mn_orig_dst, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!orig) {
		count(MN_C_ERR_STORAGE);
		return 1;
	}
	orig->addr = ctx->user_ip4;
	orig->port = (__u16)ctx->user_port;
	orig->flags = MN_ORIG_F_REDIRECTED;
	orig->pod_netns = netns;

	ctx->user_ip4 = cfg->redirect_addr;
	ctx->user_port = cfg->redirect_port;
	count(MN_C_REDIRECTED);
	return 1;
}

/* Applications that ask who they are talking to keep seeing the VIP. */
SEC("cgroup/getpeername4")
int mn_getpeername4(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct mn_orig_dst *orig;

	if (!sk)
		return 1;
	orig = bpf_sk_storage_get(&mn_orig_dst, sk, 0, 0);
	if (!orig || !(orig->flags & MN_ORIG_F_REDIRECTED))
		return 1;
	ctx->user_ip4 = orig->addr;
	ctx->user_port = orig->port;
	count(MN_C_PEERNAME);
	return 1;
}

static __always_inline void ops_tuple(struct bpf_sock_ops *ops, struct mn_tuple_key *k,
				      int local_is_src)
{
	__u32 l = ops->local_ip4, r = ops->remote_ip4;
	__u16 lp = local_port_be(ops->local_port), rp = remote_port_be(ops->remote_port);

	k->saddr = local_is_src ? l : r;
	k->daddr = local_is_src ? r : l;
	k->sport = local_is_src ? lp : rp;
	k->dport = local_is_src ? rp : lp;
	k->pad = 0;
	k->netns = is_loopback(l) ? bpf_get_netns_cookie(ops) : 0;
}

static __always_inline void ops_active(struct bpf_sock_ops *ops, struct mn_config *cfg)
{
	struct bpf_sock *sk = ops->sk;
	struct mn_tuple_key key = {};
	struct mn_orig_dst *orig;

	/* Read ctx->sk once: the verifier tracks the NULL check on this copy. */
	if (!sk)
		return;
	orig = bpf_sk_storage_get(&mn_orig_dst, sk, 0, 0);
	if (!orig || !(orig->flags & MN_ORIG_F_REDIRECTED))
		return;
	count(MN_C_OPS_ACTIVE);
	/* Pod side: local is the source of the connection. */
	ops_tuple(ops, &key, 1);
	if (bpf_map_update_elem(&mn_tuple, &key, orig, BPF_ANY))
		count(MN_C_ERR_TUPLE);
	if (cfg->flags & MN_CFG_F_SKMSG) {
		if (bpf_sock_hash_update(ops, &mn_sock_hash, &key, BPF_ANY))
			count(MN_C_ERR_SOCKHASH);
	}
}

static __always_inline void ops_passive(struct bpf_sock_ops *ops, struct mn_config *cfg)
{
	struct mn_tuple_key ckey = {}, own = {};
	struct mn_orig_dst *orig, *st;
	struct bpf_sock *sk;

	/* Daemon side: the client's view has the remote end as source. */
	ops_tuple(ops, &ckey, 0);
	orig = bpf_map_lookup_elem(&mn_tuple, &ckey);
	if (!orig) {
		count(MN_C_OPS_PASSIVE_MISS);
		return;
	}
	sk = ops->sk;
	if (!sk)
		return;
	st = bpf_sk_storage_get(&mn_orig_dst, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		count(MN_C_ERR_STORAGE);
		return;
	}
	st->addr = orig->addr;
	st->port = orig->port;
	st->pod_netns = orig->pod_netns;
	st->flags = MN_ORIG_F_ACCEPTED;
	bpf_map_delete_elem(&mn_tuple, &ckey);
	count(MN_C_OPS_PASSIVE);
	if (cfg->flags & MN_CFG_F_SKMSG) {
		ops_tuple(ops, &own, 1);
		if (bpf_sock_hash_update(ops, &mn_sock_hash, &own, BPF_ANY))
			count(MN_C_ERR_SOCKHASH);
	}
}

SEC("sockops")
int mn_sockops(struct bpf_sock_ops *ops)
{
	struct mn_config *cfg;

	if (ops->family != AF_INET)
		return 1;
	if (ops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    ops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	cfg = mn_cfg();
	if (!cfg)
		return 1;
	if (ops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		ops_active(ops, cfg);
	else
		ops_passive(ops, cfg);
	return 1;
}

/* Runs for every sendmsg on a socket in mn_sock_hash. The peer registered
 * itself under the mirrored tuple; if it is there, the bytes are queued
 * directly on its receive side. If not (peer closed, or never inserted) the
 * message takes the normal TCP path: SK_PASS either way. */
SEC("sk_msg")
int mn_sk_msg(struct sk_msg_md *msg)
{
	struct mn_tuple_key peer = {};

	if (msg->family != AF_INET)
		return SK_PASS;
	peer.saddr = msg->remote_ip4;
	peer.daddr = msg->local_ip4;
	peer.sport = remote_port_be(msg->remote_port);
	peer.dport = local_port_be(msg->local_port);
	peer.netns = is_loopback(msg->local_ip4) ? bpf_get_netns_cookie(msg) : 0;
	if (bpf_msg_redirect_hash(msg, &mn_sock_hash, &peer, BPF_F_INGRESS) == SK_PASS)
		count(MN_C_MSG_REDIRECT);
	else
		count(MN_C_MSG_PASS);
	return SK_PASS;
}
