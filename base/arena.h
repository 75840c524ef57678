/* Arena: bump allocation from chunks, freed all at once.  Every IR module,
 * AST and model owns one; nothing in them is freed piece by piece. */
#ifndef MAMLC_ARENA_H
#define MAMLC_ARENA_H

#include <stddef.h>

typedef struct ArenaChunk ArenaChunk;
typedef struct {
    ArenaChunk *head;
} Arena;

/* Zeroed, 16-byte aligned memory that lives until arena_free.  Aborts the
 * process only when the system is out of memory. */
void *arena_alloc(Arena *a, size_t size);
/* Copy of the `n` bytes at s, NUL-terminated. */
char *arena_strndup(Arena *a, const char *s, size_t n);
char *arena_strdup(Arena *a, const char *s);
/* printf into the arena. */
char *arena_printf(Arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Grow the arena-owned array `old` of *cap elements of `elem` bytes to hold
 * at least `need`; returns the (possibly moved) array and updates *cap. */
void *arena_grow(Arena *a, void *old, int *cap, int need, size_t elem);
void arena_free(Arena *a);

#endif
