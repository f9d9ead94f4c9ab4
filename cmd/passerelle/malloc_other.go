//go:build !(linux && cgo)

package main

// trimMalloc does nothing where the C library is not glibc's.
func trimMalloc() {}
