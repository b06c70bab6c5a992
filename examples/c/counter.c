/* counter: a reactor function in C (DESIGN §3, reactor ABI).
 *
 * The instance is created once (`_initialize`, provided by wasi-libc's reactor start
 * file, runs the C constructors) and `strata_handle` runs per invocation. `count` lives
 * in linear memory, so with `x-strata-affinity` every request with one key sees the
 * count the previous one left: the answers are 1, 2, 3, ... while that instance lives.
 * The request body is echoed after the count, to show per-invocation stdin. */
#include <stdio.h>
#include <unistd.h>

static unsigned long count;

__attribute__((export_name("strata_handle")))
int strata_handle(void) {
    char buf[256];
    ssize_t n = read(0, buf, sizeof buf);
    count++;
    printf("%lu", count);
    if (n > 0) {
        printf(" %.*s", (int)n, buf);
    }
    /* stdout is line-buffered only on terminals: flush so this invocation's output is
     * written before it returns. */
    fflush(stdout);
    return 0;
}
