/* mamlc run --log FILE.jsonl: the experiment log, one JSON object a line
 * (docs/logs.md), and the "config" and "history" that --report gains. */
#ifndef MAMLC_TOOLS_RUNLOG_H
#define MAMLC_TOOLS_RUNLOG_H

#include <stdbool.h>
#include <stdio.h>

#include "../runtime/runtime.h"
#include "run.h"

typedef struct {
    int fd;                     /* the log file; -1: none (the report's alone) */
    const char *path;
    int error;                  /* errno of the first write that failed; 0: none */
    char *config;               /* the "config" object, JSON text; malloc'd */
    long tasks;                 /* held-out tasks per evaluation */
    FILE *history;              /* the report's "history" items, comma-separated */
    char *history_text;
    size_t history_len;
    double opened;              /* monotonic seconds when it was opened */
} RunLog;

/* A log that keeps the configuration and every evaluation, and with
 * path != NULL writes them to path, appending when `append` (a resumed run
 * continues its log) and else replacing what was there.  False with errno
 * set when path cannot be opened or memory is short. */
bool runlog_open(RunLog *l, const char *path, bool append);

/* The run's configuration, kept and written as the "config" line: the
 * model file and its SHA-256, the model's description (every meta key),
 * the compiler, the command, and the run's options.  `start` is the
 * iteration the run starts after (a resumed run's). */
void runlog_config(RunLog *l, const Model *md, const BeOptions *be, const RunOptions *o, long iterations,
                   long start, long tasks);

/* An RtProgressFn (ctx: the RunLog): a "train" line. */
void runlog_train(void *ctx, long done, double mean_loss, double steps_per_second);

/* An RtEvalFn (ctx: the RunLog): an "eval" line, and an item of the history. */
void runlog_eval(void *ctx, long done, const RtEvalPoint *points, int npoints);

/* The report's further members, "\"history\": [...], \"config\": {...}"
 * (the history only `with_history`); malloc'd, or NULL when memory is short. */
char *runlog_report_members(RunLog *l, bool with_history);

/* Close the log; false when a line could not be written (l->error says why). */
bool runlog_close(RunLog *l);

#endif
