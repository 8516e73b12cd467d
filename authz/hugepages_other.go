//go:build !linux

package authz

// collapse does nothing where the kernel has no MADV_COLLAPSE.
func collapse(hugeArray) error { return nil }
