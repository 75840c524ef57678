/* Counting heap allocations in a test executable: after alloc_count_start(),
 * every malloc, calloc, realloc, aligned_alloc, posix_memalign and memalign
 * of the process, its threads and the libraries it loads included, adds one
 * to alloc_count().  Include it in one file of an executable.  Plain builds
 * interpose the allocation functions over glibc's; under AddressSanitizer,
 * whose allocator must stay in place, its allocation hook counts instead. */
#ifndef MAMLC_ALLOC_COUNT_H
#define MAMLC_ALLOC_COUNT_H

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>

static atomic_long alloc_counter;

static inline long alloc_count(void) { return atomic_load(&alloc_counter); }

#if defined(__SANITIZE_ADDRESS__)
#define ALLOC_COUNT_HOOK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ALLOC_COUNT_HOOK 1
#endif
#endif

#ifdef ALLOC_COUNT_HOOK
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));

static void alloc_count_malloc_hook(const volatile void *p, size_t n) {
    (void)p, (void)n;
    atomic_fetch_add(&alloc_counter, 1);
}

static void alloc_count_free_hook(const volatile void *p) { (void)p; }

static inline void alloc_count_start(void) {
    __sanitizer_install_malloc_and_free_hooks(alloc_count_malloc_hook, alloc_count_free_hook);
}
#else
void *__libc_malloc(size_t size);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t size);
void *__libc_memalign(size_t alignment, size_t size);

void *malloc(size_t size) {
    atomic_fetch_add(&alloc_counter, 1);
    return __libc_malloc(size);
}

void *calloc(size_t n, size_t size) {
    atomic_fetch_add(&alloc_counter, 1);
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size) {
    atomic_fetch_add(&alloc_counter, 1);
    return __libc_realloc(p, size);
}

void *memalign(size_t alignment, size_t size) {
    atomic_fetch_add(&alloc_counter, 1);
    return __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) { return memalign(alignment, size); }

int posix_memalign(void **p, size_t alignment, size_t size) {
    *p = memalign(alignment, size);
    return *p || !size ? 0 : ENOMEM;
}

static inline void alloc_count_start(void) {}
#endif

#endif
