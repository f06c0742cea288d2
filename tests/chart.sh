#!/bin/sh
# The chart as a user meets it: `helm lint`, `helm template` of the default
# values (kept at helm/rendered/metanode.yaml, which must match), of cluster
# mode and of netns-dir pod discovery, each validated offline against the
# real Kubernetes API types (tests/peers/helm/validate). Then the checks
# that prove the checkers bite: a value the schema forbids fails the render,
# and the mistake the first chart made (Bidirectional propagation on an
# unprivileged container) fails validation.
# usage: chart.sh HELM VALIDATE [--update]
set -eu
helm=$1 validate=$2
root="$(cd "$(dirname "$0")/.." && pwd)"
chart="$root/helm/metanode"
rendered="$root/helm/rendered/metanode.yaml"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export HELM_CACHE_HOME="$tmp/cache" HELM_CONFIG_HOME="$tmp/config" HELM_DATA_HOME="$tmp/data"

"$helm" lint --strict "$chart"

render() { "$helm" template metanode "$chart" --namespace metanode-system "$@"; }
{
  echo "# helm template metanode helm/metanode --namespace metanode-system"
  echo "# (tests/chart.sh keeps this file equal to that; run it with --update after a chart change)"
  render
} > "$tmp/default.yaml"
if [ "${3:-}" = --update ]; then cp "$tmp/default.yaml" "$rendered"; fi
if ! diff -u "$rendered" "$tmp/default.yaml"; then
  echo "FAIL: helm/rendered/metanode.yaml is not what the chart renders (tests/chart.sh ... --update)" >&2
  exit 1
fi
"$validate" "$tmp/default.yaml"

render --set xds.address=istiod.istio-system.svc:15012,xds.aerakiAddress=aeraki.istio-system:15010 \
  > "$tmp/cluster.yaml"
"$validate" "$tmp/cluster.yaml"
grep -q -- '--xds-cluster aeraki-xds=aeraki.istio-system:15010' "$tmp/cluster.yaml"
# Aeraki's certificate is verified by its own name, not istiod's; or plaintext.
grep -q -- '--xds-cluster-tls aeraki-xds=aeraki.istio-system.svc' "$tmp/cluster.yaml"
render --set xds.address=istiod.istio-system.svc:15012,xds.aerakiAddress=aeraki.istio-system:15010 \
  --set xds.aerakiServerName=plaintext > "$tmp/plain.yaml"
grep -q -- '--xds-cluster-tls aeraki-xds=plaintext' "$tmp/plain.yaml"
# The default (pods.mode kubernetes): the role it reads with, bound to its account.
grep -q -- '--pods kubernetes' "$tmp/default.yaml"
grep -q -- '--netns-dir /var/run/netns:cni-' "$tmp/default.yaml"
grep -q '^kind: ClusterRoleBinding' "$tmp/default.yaml"
grep -q 'automountServiceAccountToken: true' "$tmp/default.yaml"
render --set accessLog.path=- > "$tmp/access.yaml"
"$validate" "$tmp/access.yaml"
grep -q -- '--access-log "-"' "$tmp/access.yaml"
grep -q -- '--access-log-max-rate 1000' "$tmp/access.yaml"
if grep -q -- '--access-log' "$tmp/default.yaml"; then
  echo "FAIL: the access log is on by default" >&2
  exit 1
fi
render --set pods.mode=all > "$tmp/all.yaml"
"$validate" "$tmp/all.yaml"
if grep -q '^kind: ClusterRole' "$tmp/all.yaml"; then
  echo "FAIL: a role is bound without pods.mode kubernetes" >&2
  exit 1
fi
render --set pods.mode=netns-dir,privileged=true,bpffs.mountIfMissing=false > "$tmp/netns.yaml"
"$validate" "$tmp/netns.yaml"
grep -q -- '--pods netns-dir=/var/run/netns:cni-' "$tmp/netns.yaml"

# The checkers bite.
# Hitless upgrades by default: the handover name, and a surge so the new pod
# starts beside the old one; without it, one node at a time stops first.
grep -q -- '--handover "@metanode-handover"' "$tmp/default.yaml"
grep -q 'rollingUpdate: {maxSurge: 1, maxUnavailable: 0}' "$tmp/default.yaml"
render --set handover= > "$tmp/cold.yaml"
"$validate" "$tmp/cold.yaml"
grep -q 'rollingUpdate: {maxUnavailable: 1}' "$tmp/cold.yaml"
if grep -q -- '--handover' "$tmp/cold.yaml"; then
  echo "FAIL: handover= still renders --handover" >&2
  exit 1
fi
if render --set handover=relative/path > "$tmp/bad.yaml" 2>&1; then
  echo "FAIL: values.schema.json accepted a handover name that is neither @NAME nor a path" >&2
  exit 1
fi
if render --set pods.mode=everything > "$tmp/bad.yaml" 2>&1; then
  echo "FAIL: values.schema.json accepted pods.mode=everything" >&2
  exit 1
fi
sed 's/mountPropagation: HostToContainer/mountPropagation: Bidirectional/' "$tmp/default.yaml" > "$tmp/bad.yaml"
if "$validate" "$tmp/bad.yaml" > "$tmp/out" 2>&1; then
  echo "FAIL: the validator accepted Bidirectional propagation on an unprivileged container" >&2
  exit 1
fi
grep -q "only to privileged containers" "$tmp/out"
sed 's/^      hostNetwork: true/      hostNetwork: true\n      hostNetworking: true/' "$tmp/default.yaml" > "$tmp/bad.yaml"
if "$validate" "$tmp/bad.yaml" > "$tmp/out" 2>&1; then
  echo "FAIL: the validator accepted an unknown field" >&2
  exit 1
fi
echo "chart: lint, render and validation passed"
