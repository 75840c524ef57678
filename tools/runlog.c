/* The experiment log: each line is composed in memory and written with one
 * write(2), so a run that is killed leaves only complete lines. */
#include "runlog.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "json.h"
#include "library.h"
#include "util.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool runlog_open(RunLog *l, const char *path, bool append) {
    *l = (RunLog){.fd = -1, .path = path, .opened = now()};
    l->history = open_memstream(&l->history_text, &l->history_len);
    if (!l->history)
        return false;
    if (path && (l->fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0666)) < 0) {
        int e = errno;
        fclose(l->history);
        free(l->history_text);
        errno = e;
        return false;
    }
    return true;
}

/* Writes the line held in text[0..n) (its newline included) with one
 * write, as far as the file system allows; keeps the first error. */
static void write_line(RunLog *l, const char *text, size_t n) {
    while (l->fd >= 0 && !l->error && n > 0) {
        ssize_t w = write(l->fd, text, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            l->error = w < 0 ? errno : EIO;
            break;
        }
        text += w;
        n -= (size_t)w;
    }
}

/* Text composed in memory: a stream to print to, and what it holds. */
typedef struct {
    FILE *f;
    char *text;
    size_t len;
} Text;

/* Opens t; false (and the log's error ENOMEM) when memory is short. */
static bool text_open(RunLog *l, Text *t) {
    *t = (Text){0};
    if ((t->f = open_memstream(&t->text, &t->len)))
        return true;
    l->error = l->error ? l->error : ENOMEM;
    return false;
}

/* Closes t: its text (the caller frees it), or NULL when memory was short. */
static char *text_close(RunLog *l, Text *t) {
    if (fclose(t->f) == 0)
        return t->text;
    free(t->text);
    l->error = l->error ? l->error : ENOMEM;
    return NULL;
}

/* A line: "{\"event\": \"EVENT\", " + body + "}\n". */
static void put_line(RunLog *l, const char *event, const char *body) {
    Text t;
    if (!text_open(l, &t))
        return;
    fprintf(t.f, "{\"event\": \"%s\", %s}\n", event, body);
    char *line = text_close(l, &t);
    if (line)
        write_line(l, line, strlen(line));
    free(line);
}

static void put_opt_string(FILE *f, const char *key, const char *value) {
    if (!value)
        return;
    fprintf(f, ", \"%s\": ", key);
    json_put_string(f, value);
}

void runlog_config(RunLog *l, const Model *md, const BeOptions *be, const RunOptions *o, long iterations,
                   long start, long tasks) {
    Text t;
    l->tasks = tasks;
    if (!text_open(l, &t))
        return;
    FILE *f = t.f;
    char *cpu = be->target_cpu ? NULL : LLVMGetHostCPUName();
    fprintf(f, "\"mamlc\": \"%s\", \"llvm\": \"19\", \"command\": [", MAMLC_VERSION);
    for (int i = 0; i < o->argc; i++) {
        fputs(i ? ", " : "", f);
        json_put_string(f, o->argv[i]);
    }
    fputs("], \"model_file\": ", f);
    json_put_string(f, md->file);
    fprintf(f, ", \"model_sha256\": \"%s\", \"dtype\": \"%s\", \"target_cpu\": ", o->model_sha256,
            ir_dtype_name(md->real));
    json_put_string(f, be->target_cpu ? be->target_cpu : cpu);
    fprintf(f, ", \"opt_level\": %d, \"seed\": %llu, \"threads\": %d, \"processes\": %d", be->opt_level,
            (unsigned long long)o->seed, o->threads, o->cluster ? o->cluster->size : 1);
    fprintf(f, ", \"iterations\": %ld, \"start\": %ld, \"eval_every\": %ld, \"eval_tasks\": %ld, \"eval_steps\": [",
            iterations, start, o->eval_every, tasks);
    for (int k = 0; k < md->meta.neval_steps; k++)
        fprintf(f, "%s%d", k ? ", " : "", md->meta.eval_steps[k]);
    fprintf(f, "], \"log_every\": %ld", o->log_every);
    put_opt_string(f, "resume", o->resume);
    put_opt_string(f, "load", o->load);
    put_opt_string(f, "data", o->data);
    put_opt_string(f, "eval_data", o->eval_data);
    put_opt_string(f, "tasks", o->tasks);
    put_opt_string(f, "eval_tasks_file", o->eval_tasks_file);
    put_opt_string(f, "eval_split", o->eval_split);
    char *model = lib_model_json(md);
    fprintf(f, ", \"model\": %s", model ? model : "null");
    free(model);
    LLVMDisposeMessage(cpu);
    if ((l->config = text_close(l, &t)))
        put_line(l, "config", l->config);
}

void runlog_train(void *ctx, long done, double mean_loss, double steps_per_second) {
    RunLog *l = ctx;
    Text t;
    if (!text_open(l, &t))
        return;
    fprintf(t.f, "\"iteration\": %ld, \"loss\": ", done);
    json_put_number(t.f, mean_loss);
    fprintf(t.f, ", \"steps_per_second\": %.6g, \"seconds\": %.3f", steps_per_second, now() - l->opened);
    char *body = text_close(l, &t);
    if (body)
        put_line(l, "train", body);
    free(body);
}

void runlog_eval(void *ctx, long done, const RtEvalPoint *points, int npoints) {
    RunLog *l = ctx;
    Text t;
    if (!text_open(l, &t))
        return;
    fprintf(t.f, "\"iteration\": %ld, \"seconds\": %.3f, \"tasks\": %ld, \"eval\": ", done, now() - l->opened,
            l->tasks);
    rt_put_eval_json(t.f, points, npoints);
    char *body = text_close(l, &t);
    if (!body)
        return;
    put_line(l, "eval", body);
    fprintf(l->history, "%s{%s}", ftell(l->history) ? ", " : "", body);
    free(body);
}

char *runlog_report_members(RunLog *l, bool with_history) {
    if (fflush(l->history) != 0)
        return NULL;
    size_t size = l->history_len + (l->config ? strlen(l->config) : 0) + 64;
    char *s = malloc(size);
    if (s)
        snprintf(s, size, "%s%s%s\"config\": {%s}", with_history ? "\"history\": [" : "",
                 with_history ? l->history_text : "", with_history ? "], " : "", l->config ? l->config : "");
    return s;
}

bool runlog_close(RunLog *l) {
    if (l->history)
        fclose(l->history);
    free(l->history_text);
    free(l->config);
    if (l->fd >= 0 && close(l->fd) != 0 && !l->error)
        l->error = errno;
    l->fd = -1;
    return !l->error;
}
