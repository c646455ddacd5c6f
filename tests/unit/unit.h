/*
 * unit.h - the smallest test harness that says what failed: CHECK records
 * a failure with file and line and goes on; unit_summary() prints the
 * closing "N passed, N failed" line and gives the exit status.
 */
#ifndef TLLM_UNIT_H
#define TLLM_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_passed, unit_failed;

#define CHECK(cond) do { \
        if (cond) { unit_passed++; } \
        else { unit_failed++; \
               fprintf(stderr, "%s:%d: CHECK failed: %s\n", \
                       __FILE__, __LINE__, #cond); } \
    } while (0)

#define CHECK_STR(got, want) do { \
        const char *g_ = (got), *w_ = (want); \
        if (g_ && w_ && strcmp(g_, w_) == 0) { unit_passed++; } \
        else { unit_failed++; \
               fprintf(stderr, "%s:%d: %s: got \"%s\", want \"%s\"\n", \
                       __FILE__, __LINE__, #got, g_ ? g_ : "(null)", \
                       w_ ? w_ : "(null)"); } \
    } while (0)

static inline int unit_summary(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, unit_passed, unit_failed);
    return unit_failed ? 1 : 0;
}

#endif
