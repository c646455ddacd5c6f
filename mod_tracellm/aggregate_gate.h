/*
 * aggregate_gate.h - each child computes at most N aggregate reads
 * (/analytics, /failures) at once; the others wait their turn in arrival
 * order.
 *
 * An aggregate read is steady CPU work once its pages are cached: 0.1 to
 * 0.3 ms over thousands of rollup rows at 1,000,000 traces. Unbounded, 32
 * of them at once are 32 runnable threads on two cores, and the kernel
 * time-slices them: a read that loses the CPU halfway waits a round of
 * everyone else's slices. The slowest 1 % then took 15-32 ms while the
 * median took 2-4. Bounded to the cores, a read waits for the reads ahead
 * of it and then runs through: the slowest 1 % took 4-11 ms. The price is
 * a wake-up for each read that waits: throughput 8 to 16 % lower, and
 * the median, which in a fair queue is close to the mean, 0.5-0.8 ms higher
 * (BENCHMARKS.md).
 *
 * Not gated: point reads and listing pages (0.03-0.08 ms) finish well
 * within a time slice, so a turn would only add a wake-up to each
 * (/traces/{id} gated: 34,000 req/s at -c32 against 44,000); and a
 * latency-bound listing, 3-4 ms of CPU at 1,000,000 traces, would hold a
 * turn that long. Writes queue already, on the write lock and group
 * commit.
 *
 * The limit is per child, and as many turns as cores, because a child
 * may hold nearly all the connections (wrk's 32 were split 30/2 and 1/31
 * between two children): each child alone must be able to use every core.
 *
 * Only the computing is gated: a read gives its turn back before its
 * response is written (the send functions call tllm_aggregate_gate_leave),
 * so a slow client holds a worker thread, as with any httpd response, but
 * never a turn.
 */
#ifndef TLLM_AGGREGATE_GATE_H
#define TLLM_AGGREGATE_GATE_H

#include <httpd.h>
#include <http_config.h>

/** pre_config: back to the default (as many turns as online CPUs). */
void tllm_aggregate_gate_defaults(void);

/** TraceLLMAggregateConcurrency N: aggregate reads computed at once per
 *  child; 0 is no limit. Global only. */
const char *tllm_aggregate_gate_set(cmd_parms *cmd, void *dconf,
                                    const char *arg);

/** child_init: make the child's gate. */
void tllm_aggregate_gate_child_init(apr_pool_t *pchild, server_rec *s);

/** Wait for a turn to compute r (arrival order), and hold it. */
void tllm_aggregate_gate_enter(request_rec *r);

/** Give r's turn to the next read waiting, if r holds one; r no longer
 *  holds it. Safe to call more than once. */
void tllm_aggregate_gate_leave(request_rec *r);

#endif
