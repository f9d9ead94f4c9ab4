//go:build linux && cgo

package main

/*
#include <malloc.h>
#include <stdlib.h>

// limitArenas caps glibc's malloc arenas (used by SQLite) unless
// MALLOC_ARENA_MAX says otherwise. glibc gives each thread that contends
// for malloc an arena of its own, up to eight per core; SQLite is called
// from whichever threads the Go scheduler runs its callers on, so a
// burst of queries leaves a dozen arenas, each holding freed memory.
static void limitArenas(int n) {
#ifdef M_ARENA_MAX
	if (getenv("MALLOC_ARENA_MAX") == NULL) {
		mallopt(M_ARENA_MAX, n);
	}
#endif
}
*/
import "C"

func init() { C.limitArenas(2) }
