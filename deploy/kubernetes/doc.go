// Package kubernetes holds Usher's Kubernetes manifests, in single/ and
// etcd/, and the test that parses them into the Kubernetes API types and
// checks them against the usher binary. It has no code of its own, and is a
// module of its own so that k8s.io/api stays out of Usher's go.mod.
package kubernetes
