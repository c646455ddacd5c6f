/*
 * ttime.h - timestamps: integer microseconds since the Unix epoch, UTC.
 * Pure C, no httpd types.
 */
#ifndef TLLM_TTIME_H
#define TLLM_TTIME_H

#include <stdint.h>

/* "2026-05-31T14:22:10.123456+00:00" plus NUL, with room to spare. */
#define TLLM_TIME_BUFSZ 40

/** Current time, microseconds since the epoch (UTC). */
int64_t tllm_now_us(void);

/** Write us as ISO 8601 UTC with exactly six fraction digits and
 *  "+00:00". Returns buf. */
char *tllm_time_format(int64_t us, char buf[TLLM_TIME_BUFSZ]);

/** Parse an ISO 8601 timestamp: "YYYY-MM-DD", optionally followed by "T"
 *  or " " and "HH:MM[:SS[.fraction]]", optionally followed by "Z", "z" or
 *  an offset "+HH:MM", "+HHMM", "+HH" (or "-"). No offset means UTC.
 *  Fractions beyond microseconds are truncated. On success stores the UTC
 *  instant in *us and returns 0; else returns -1 and, if err is not NULL,
 *  points *err at a short static English reason. */
int tllm_time_parse(const char *s, int64_t *us, const char **err);

#endif
