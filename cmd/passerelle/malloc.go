//go:build linux && cgo

package main

/*
#include <malloc.h>
#include <stdlib.h>

// glibc gives each thread that contends for malloc an arena of its own,
// up to eight per core, and keeps each arena's freed memory. SQLite is
// called from whichever threads the Go scheduler runs its callers on, so
// a burst of queries leaves a dozen arenas behind. Two are plenty for
// SQLite here. MALLOC_ARENA_MAX, when set, wins.
//
// This runs as the program is loaded, before the Go runtime starts any
// thread: glibc fixes its arena limit the first time a thread needs a new
// arena, and a later mallopt has no effect on that.
__attribute__((constructor)) static void passerelle_limit_arenas(void) {
#ifdef M_ARENA_MAX
	if (getenv("MALLOC_ARENA_MAX") == NULL) {
		mallopt(M_ARENA_MAX, 2);
	}
#endif
}

static void passerelle_trim(void) {
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}
*/
import "C"

// trimMalloc returns glibc's free memory to the system.
func trimMalloc() { C.passerelle_trim() }
