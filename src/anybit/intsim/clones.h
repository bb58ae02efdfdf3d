// Function multiversioning for the engine's hot loops (kernels.h): ANYBIT_CLONES compiles a
// function for AVX2 and for the x86-64 baseline, and the dynamic loader picks one per
// machine (GNU ifunc). Clang cannot clone templates, so every cloned function is a thin
// wrapper around an always-inlined template body (ANYBIT_INLINE), compiled into each clone.
// Not under ThreadSanitizer: it instruments the ifunc resolvers, which the dynamic loader
// runs before the sanitizer's runtime is up. ANYBIT_INTSIM_NO_CLONES builds the baseline only.
#pragma once

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ANYBIT_INTSIM_TSAN
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define ANYBIT_INTSIM_TSAN
#endif
#if !defined(ANYBIT_INTSIM_NO_CLONES) && !defined(ANYBIT_INTSIM_TSAN) && defined(__x86_64__) && \
    defined(__GLIBC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define ANYBIT_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef ANYBIT_CLONES
#define ANYBIT_CLONES
#endif
#define ANYBIT_INLINE inline __attribute__((always_inline))
