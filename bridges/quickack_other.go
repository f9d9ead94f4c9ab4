//go:build !linux

package bridges

func setQuickACK(uintptr) {}
