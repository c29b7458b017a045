/* fuzz_trace.c — libFuzzer target for the trace loader's CSV path (pw_trace_split and the
 * strict row parsing of pw_trace_load).
 *
 * The input becomes invocations_per_minute.csv in a private temporary directory, next to
 * minimal valid durations_ms.csv and memory_mb.csv. A load must either succeed with a trace
 * whose totals add up and whose names are valid, or fail with a one-line reason and nothing
 * allocated. pw_trace_split is also run on the raw bytes as one line. */
#include "pw/error.h"
#include "pw/trace.h"
#include "pw/util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

static void check(int ok, const char *what, const char *detail)
{
    if (!ok) {
        fprintf(stderr, "fuzz_trace: %s: %s\n", what, detail);
        abort();
    }
}

static void write_file(const char *name, const void *p, size_t n)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    check(f != NULL, "cannot write", path);
    check(fwrite(p, 1, n, f) == n, "short write", path);
    fclose(f);
}

static void setup_once(void)
{
    if (dir[0] != '\0')
        return;
    snprintf(dir, sizeof(dir), "/tmp/pw_fuzz_trace_XXXXXX");
    check(mkdtemp(dir) != NULL, "mkdtemp", dir);
    static const char dur[] = "HashFunction,HashApp,HashOwner,Count,Average,Minimum,Maximum,percentile_Average_0,"
                              "percentile_Average_1,percentile_Average_25,percentile_Average_50,"
                              "percentile_Average_75,percentile_Average_99,percentile_Average_100\n"
                              "h0,a0,o0,1,100,1,900,1,2,50,100,150,800,900\n";
    static const char mem[] = "HashApp,HashOwner,SampleCount,AverageAllocatedMb\na0,o0,1,128\n";
    write_file("durations_ms.csv", dur, sizeof(dur) - 1);
    write_file("memory_mb.csv", mem, sizeof(mem) - 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup_once();

    /* The splitter on the raw bytes as one NUL-terminated line. */
    char *line = pw_xmalloc(size + 1);
    memcpy(line, data, size);
    line[size] = '\0';
    char *fields[64];
    size_t n = pw_trace_split(line, fields, 64);
    check(n >= 1, "split returned no field", "");
    for (size_t i = 0; i < n && i < 64; i++)
        check(fields[i] >= line && fields[i] <= line + size, "field outside the line", "");
    free(line);

    write_file("invocations_per_minute.csv", data, size);
    struct pw_trace t;
    char err[512] = "";
    int rv = pw_trace_load(dir, &t, err, sizeof(err));
    if (rv != PW_OK) {
        check(t.fns == NULL && t.nfns == 0, "failed load left data behind", err);
        check(err[0] != '\0' && strchr(err, '\n') == NULL, "bad error reason", err);
        return 0;
    }
    check(t.nfns > 0 && t.nminutes > 0 && t.nminutes <= PW_TRACE_MAX_MINUTES, "bad shape", "");
    uint64_t total = 0;
    for (size_t i = 0; i < t.nfns; i++) {
        const struct pw_trace_fn *f = &t.fns[i];
        uint64_t sum = 0;
        for (size_t m = 0; m < t.nminutes; m++)
            sum += f->minutes[m];
        check(sum == f->total, "function total differs from its minutes", f->name);
        check(pw_name_valid(f->name), "invalid function name", f->name);
        for (int p = 1; p < PW_TRACE_NPCT; p++)
            check(f->dur_pct_ms[p] >= f->dur_pct_ms[p - 1], "duration percentiles not monotone", f->name);
        check(f->mem_mb >= 0, "negative memory", f->name);
        total += sum;
    }
    check(total == t.total, "trace total differs", "");
    pw_trace_free(&t);
    return 0;
}
