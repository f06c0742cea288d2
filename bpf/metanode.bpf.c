// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * metanode.bpf.c - connect interception and socket-to-socket payload path.
 *
 *   cgroup/connect4,6     pod connects to a mesh VIP:port (IPv4, or IPv4-mapped
 *                         IPv6) -> rewritten to the daemon's redirect address;
 *                         the original destination is kept in the socket's
 *                         mn_orig_dst storage.
 *   cgroup/getpeername4,6 the pod keeps seeing the VIP as its peer.
 *   cgroup/getsockopt     SO_ORIGINAL_DST on the daemon's accepted socket, for
 *                         tools that ask the iptables way.
 *   sockops               ACTIVE_ESTABLISHED (pod side) publishes the tuple;
 *                         PASSIVE_ESTABLISHED (daemon side) copies the original
 *                         destination onto the accepted socket; both sockets
 *                         enter mn_sock_hash. Optionally the same for the
 *                         daemon's upstream connects to pods on this node.
 *   sk_msg                bytes written on one end go straight to the other
 *                         end's receive queue: no TCP/IP stack, no veth.
 *
 * Every hook fails open: whatever goes wrong, the connect or the message
 * proceeds unchanged and a per-CPU counter says why.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "metanode_abi.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SK_PASS 1
#define SOL_IP 0
#define SO_ORIGINAL_DST 80

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* VIP:port -> registration. Writer: daemon (from listeners). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MN_MAX_SERVICES);
	__type(key, struct mn_svc_key);
	__type(value, struct mn_svc_val);
} mn_services SEC(".maps");

/* netns cookie -> pod policy. Writer: daemon / metanodectl. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MN_MAX_PODS);
	__type(key, __u64);
	__type(value, struct mn_pod_val);
} mn_pods SEC(".maps");

/* {netns or 0, destination port} never intercepted. Writer: daemon / metanodectl. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MN_MAX_EXCL);
	__type(key, struct mn_excl_key);
	__type(value, __u32);
} mn_excl SEC(".maps");

/* Single entry. Writer: daemon (config at start, heartbeat periodically). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mn_config);
} mn_config SEC(".maps");

/* Per-socket original destination. Writers: connect4/6, sockops. Freed by
 * the kernel with the socket, so it cannot leak. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mn_orig_dst);
} mn_orig_dst SEC(".maps");

/* Client-view tuple -> original destination, alive between the two ends'
 * ESTABLISHED callbacks (and for daemon upstream connects, flag UPSTREAM).
 * LRU so a peer that sockops never sees (daemon outside the attached cgroup,
 * upstream on another node) cannot make it grow without bound; entries are
 * deleted when consumed. */
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

/* ::ffff:a.b.c.d -> a.b.c.d; false for any other IPv6 address. */
static __always_inline int v4_mapped(const __u32 *ip6, __u32 *v4)
{
	if (ip6[0] != 0 || ip6[1] != 0 || ip6[2] != bpf_htonl(0xffff))
		return 0;
	*v4 = ip6[3];
	return 1;
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

/* The selection shared by connect4 and connect6: is this connect to
 * addr:port one to send to the daemon? On yes the original destination is
 * stored and the redirect target returned in *cfg_out. */
static __always_inline int intercept(struct bpf_sock_addr *ctx, __u32 addr, __u16 port,
				     struct mn_config **cfg_out)
{
	struct mn_svc_key key = {};
	struct mn_excl_key ex = {};
	struct mn_orig_dst *orig;
	struct mn_pod_val *pod;
	struct mn_config *cfg;
	struct bpf_sock *sk;
	__u64 netns;
	int managed;

	if (ctx->type != SOCK_STREAM) {
		count(MN_C_SKIP_NOT_TCP);
		return 0;
	}
	cfg = mn_cfg();
	if (!cfg) {
		count(MN_C_ERR_NO_CONFIG);
		return 0;
	}
	if (!(cfg->flags & MN_CFG_F_ENABLED)) {
		count(MN_C_SKIP_DISABLED);
		return 0;
	}

	/* Cheapest selective test first: most connects are not to a mesh VIP. */
	key.addr = addr;
	key.port = port;
	if (!bpf_map_lookup_elem(&mn_services, &key)) {
		count(MN_C_SKIP_NOT_SERVICE);
		return 0;
	}

	sk = ctx->sk;
	if (!sk)
		return 0;
	if (sk->mark == cfg->daemon_mark) {
		count(MN_C_SKIP_DAEMON_SOCK);
		return 0;
	}

	netns = bpf_get_netns_cookie(ctx);
	if (netns == bpf_get_netns_cookie(NULL) && !(cfg->flags & MN_CFG_F_HOST_NETNS)) {
		count(MN_C_SKIP_HOST_NETNS);
		return 0;
	}
	pod = bpf_map_lookup_elem(&mn_pods, &netns);
	managed = (cfg->flags & MN_CFG_F_ALL_NETNS) != 0;
	if (pod)
		managed = (pod->flags & MN_POD_F_MANAGED) && !(pod->flags & MN_POD_F_OPT_OUT);
	if (!managed) {
		count(MN_C_SKIP_NOT_POD);
		return 0;
	}
	ex.port = port;
	if (bpf_map_lookup_elem(&mn_excl, &ex)) {
		count(MN_C_SKIP_EXCLUDED_PORT);
		return 0;
	}
	ex.netns = netns;
	if (bpf_map_lookup_elem(&mn_excl, &ex)) {
		count(MN_C_SKIP_EXCLUDED_PORT);
		return 0;
	}

	/* A daemon that stopped heartbeating is treated as gone: the pod then
	 * connects where it asked to, instead of to a dead port. */
	if (bpf_ktime_get_ns() - cfg->heartbeat_ns > cfg->liveness_ns) {
		count(MN_C_SKIP_DAEMON_DOWN);
		return 0;
	}

	orig = bpf_sk_storage_get(&mn_orig_dst, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!orig) {
		count(MN_C_ERR_STORAGE);
		return 0;
	}
	orig->addr = addr;
	orig->port = port;
	orig->flags = MN_ORIG_F_REDIRECTED;
	orig->pod_netns = netns;
	*cfg_out = cfg;
	count(MN_C_REDIRECTED);
	return 1;
}

SEC("cgroup/connect4")
int mn_connect4(struct bpf_sock_addr *ctx)
{
	struct mn_config *cfg;

	count(MN_C_CONNECT_SEEN);
	if (!intercept(ctx, ctx->user_ip4, (__u16)ctx->user_port, &cfg))
		return 1;
	ctx->user_ip4 = cfg->redirect_addr;
	ctx->user_port = cfg->redirect_port;
	return 1;
}

/* Dual-stack sockets reach IPv4 services through ::ffff:a.b.c.d. */
SEC("cgroup/connect6")
int mn_connect6(struct bpf_sock_addr *ctx)
{
	struct mn_config *cfg;
	__u32 ip6[4], v4;

	count(MN_C_CONNECT_SEEN);
	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	if (!v4_mapped(ip6, &v4)) {
		count(MN_C_SKIP_NOT_V4MAPPED);
		return 1;
	}
	if (!intercept(ctx, v4, (__u16)ctx->user_port, &cfg))
		return 1;
	ctx->user_ip6[3] = cfg->redirect_addr;
	ctx->user_port = cfg->redirect_port;
	return 1;
}

static __always_inline struct mn_orig_dst *redirected(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct mn_orig_dst *orig;

	if (!sk)
		return 0;
	orig = bpf_sk_storage_get(&mn_orig_dst, sk, 0, 0);
	if (!orig || !(orig->flags & MN_ORIG_F_REDIRECTED))
		return 0;
	count(MN_C_PEERNAME);
	return orig;
}

/* Applications that ask who they are talking to keep seeing the VIP. */
SEC("cgroup/getpeername4")
int mn_getpeername4(struct bpf_sock_addr *ctx)
{
	struct mn_orig_dst *orig = redirected(ctx);

	if (orig) {
		ctx->user_ip4 = orig->addr;
		ctx->user_port = orig->port;
	}
	return 1;
}

SEC("cgroup/getpeername6")
int mn_getpeername6(struct bpf_sock_addr *ctx)
{
	struct mn_orig_dst *orig = redirected(ctx);

	if (orig) {
		ctx->user_ip6[3] = orig->addr; /* the socket is v4-mapped: prefix unchanged */
		ctx->user_port = orig->port;
	}
	return 1;
}

/* getsockopt(SOL_IP, SO_ORIGINAL_DST) on the daemon's accepted socket answers
 * from mn_orig_dst, as iptables REDIRECT would have. */
SEC("cgroup/getsockopt")
int mn_getsockopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct mn_orig_dst *orig;
	struct sockaddr_in *sa;

	if (ctx->level != SOL_IP || ctx->optname != SO_ORIGINAL_DST || !sk)
		return 1;
	orig = bpf_sk_storage_get(&mn_orig_dst, sk, 0, 0);
	if (!orig || !(orig->flags & MN_ORIG_F_ACCEPTED))
		return 1;
	sa = ctx->optval;
	if ((void *)(sa + 1) > ctx->optval_end)
		return 1;
	sa->sin_family = AF_INET;
	sa->sin_port = orig->port;
	sa->sin_addr.s_addr = orig->addr;
	ctx->optlen = sizeof(*sa);
	ctx->retval = 0;
	count(MN_C_ORIG_DST_SOCKOPT);
	return 1;
}

/* The IPv4 addresses of a socket, v4-mapped IPv6 included. The caller loads
 * every field unconditionally (CTX_V4_ADDRS): choosing between context
 * fields in a branch lets the compiler compute a pointer into the context,
 * which the verifier rejects ("dereference of modified ctx ptr"). */
static __always_inline int v4_addrs(__u32 family, __u32 l4, __u32 r4, __u32 *l6, __u32 *r6,
				    __u32 *l, __u32 *r)
{
	/* Pin every loaded value in a register here, so no load is sunk into
	 * a branch that selects between context offsets. */
	barrier_var(l4);
	barrier_var(r4);
	barrier_var(l6[3]);
	barrier_var(r6[3]);
	if (family == AF_INET) {
		*l = l4;
		*r = r4;
		return 1;
	}
	return family == AF_INET6 && v4_mapped(l6, l) && v4_mapped(r6, r);
}

/* sock_ops and sk_msg contexts name their address fields alike. */
#define CTX_V4_ADDRS(ctx, l, r)                                                \
	({                                                                     \
		__u32 l6_[4], r6_[4];                                          \
		l6_[0] = (ctx)->local_ip6[0];                                  \
		l6_[1] = (ctx)->local_ip6[1];                                  \
		l6_[2] = (ctx)->local_ip6[2];                                  \
		l6_[3] = (ctx)->local_ip6[3];                                  \
		r6_[0] = (ctx)->remote_ip6[0];                                 \
		r6_[1] = (ctx)->remote_ip6[1];                                 \
		r6_[2] = (ctx)->remote_ip6[2];                                 \
		r6_[3] = (ctx)->remote_ip6[3];                                 \
		v4_addrs((ctx)->family, (ctx)->local_ip4, (ctx)->remote_ip4,   \
			 l6_, r6_, l, r);                                      \
	})

static __always_inline void ops_tuple(struct bpf_sock_ops *ops, __u32 l, __u32 r,
				      struct mn_tuple_key *k, int local_is_src)
{
	__u16 lp = local_port_be(ops->local_port), rp = remote_port_be(ops->remote_port);

	k->saddr = local_is_src ? l : r;
	k->daddr = local_is_src ? r : l;
	k->sport = local_is_src ? lp : rp;
	k->dport = local_is_src ? rp : lp;
	k->pad = 0;
	k->netns = is_loopback(l) ? bpf_get_netns_cookie(ops) : 0;
}

static __always_inline void ops_active(struct bpf_sock_ops *ops, struct mn_config *cfg, __u32 l,
				       __u32 r)
{
	struct bpf_sock *sk = ops->sk;
	struct mn_orig_dst up = {}, *orig;
	struct mn_tuple_key key = {};

	/* Read ctx->sk once: the verifier tracks the NULL check on this copy. */
	if (!sk)
		return;
	orig = bpf_sk_storage_get(&mn_orig_dst, sk, 0, 0);
	if (!orig || !(orig->flags & MN_ORIG_F_REDIRECTED)) {
		/* The daemon's own upstream connect: offered to the peer, which
		 * joins at PASSIVE_ESTABLISHED only if it is a pod on this node. */
		if (!(cfg->flags & MN_CFG_F_SKMSG_UPSTREAM) || sk->mark != cfg->daemon_mark)
			return;
		count(MN_C_OPS_UPSTREAM);
		ops_tuple(ops, l, r, &key, 1);
		up.flags = MN_ORIG_F_UPSTREAM;
		if (bpf_map_update_elem(&mn_tuple, &key, &up, BPF_ANY))
			count(MN_C_ERR_TUPLE);
		else if (bpf_sock_hash_update(ops, &mn_sock_hash, &key, BPF_ANY))
			count(MN_C_ERR_SOCKHASH);
		return;
	}
	count(MN_C_OPS_ACTIVE);
	/* Pod side: local is the source of the connection. */
	ops_tuple(ops, l, r, &key, 1);
	if (bpf_map_update_elem(&mn_tuple, &key, orig, BPF_ANY))
		count(MN_C_ERR_TUPLE);
	if (cfg->flags & MN_CFG_F_SKMSG) {
		if (bpf_sock_hash_update(ops, &mn_sock_hash, &key, BPF_ANY))
			count(MN_C_ERR_SOCKHASH);
	}
}

static __always_inline void ops_passive(struct bpf_sock_ops *ops, struct mn_config *cfg, __u32 l,
					__u32 r)
{
	struct mn_tuple_key ckey = {}, own = {};
	struct mn_orig_dst *orig, *st;
	struct bpf_sock *sk;

	/* This end accepted: the client's view has the remote end as source. */
	ops_tuple(ops, l, r, &ckey, 0);
	orig = bpf_map_lookup_elem(&mn_tuple, &ckey);
	if (!orig) {
		count(MN_C_OPS_PASSIVE_MISS);
		return;
	}
	ops_tuple(ops, l, r, &own, 1);
	if (orig->flags & MN_ORIG_F_UPSTREAM) {
		/* A pod on this node accepted the daemon's upstream connect. */
		bpf_map_delete_elem(&mn_tuple, &ckey);
		count(MN_C_OPS_UPSTREAM_PEER);
		if (bpf_sock_hash_update(ops, &mn_sock_hash, &own, BPF_ANY))
			count(MN_C_ERR_SOCKHASH);
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
		if (bpf_sock_hash_update(ops, &mn_sock_hash, &own, BPF_ANY))
			count(MN_C_ERR_SOCKHASH);
	}
}

SEC("sockops")
int mn_sockops(struct bpf_sock_ops *ops)
{
	struct mn_config *cfg;
	__u32 l, r;

	if (ops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    ops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (!CTX_V4_ADDRS(ops, &l, &r))
		return 1;
	cfg = mn_cfg();
	if (!cfg)
		return 1;
	if (ops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		ops_active(ops, cfg, l, r);
	else
		ops_passive(ops, cfg, l, r);
	return 1;
}

/* Runs for every sendmsg on a socket in mn_sock_hash. The peer registered
 * itself under the mirrored tuple; if it is there, the bytes are queued
 * directly on its receive side, otherwise they take the normal TCP path.
 *
 * Ordering: the pod's socket enters the map at ACTIVE_ESTABLISHED, the
 * daemon's only when the handshake's last ACK reaches it. A message sent in
 * between goes by TCP and may still be in flight when the peer appears; a
 * later message redirected straight into the peer's queue would overtake it.
 * So once a socket has sent anything by TCP it stays on TCP (TCP_ONLY in its
 * storage): the path is chosen per connection direction, never mixed. */
SEC("sk_msg")
int mn_sk_msg(struct sk_msg_md *msg)
{
	struct mn_tuple_key peer = {};
	struct mn_orig_dst *st;
	__u32 l, r;
	struct bpf_sock *sk;

	sk = msg->sk;
	if (!sk)
		return SK_PASS;
	st = bpf_sk_storage_get(&mn_orig_dst, sk, 0, 0);
	if (st && (st->flags & MN_ORIG_F_TCP_ONLY)) {
		count(MN_C_MSG_PASS);
		return SK_PASS;
	}
	if (!CTX_V4_ADDRS(msg, &l, &r))
		return SK_PASS;
	peer.saddr = r;
	peer.daddr = l;
	peer.sport = remote_port_be(msg->remote_port);
	peer.dport = local_port_be(msg->local_port);
	peer.netns = is_loopback(l) ? bpf_get_netns_cookie(msg) : 0;
	if (bpf_msg_redirect_hash(msg, &mn_sock_hash, &peer, BPF_F_INGRESS) == SK_PASS) {
		count(MN_C_MSG_REDIRECT);
		return SK_PASS;
	}
	count(MN_C_MSG_PASS);
	if (!st)
		st = bpf_sk_storage_get(&mn_orig_dst, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (st)
		st->flags |= MN_ORIG_F_TCP_ONLY;
	return SK_PASS;
}
