// A small Kubernetes API server for the daemon's `--pods kubernetes` tests:
// no kube-apiserver binary can be had here. Standard library only.
module metanode/tests/peers/kube

go 1.26.0
