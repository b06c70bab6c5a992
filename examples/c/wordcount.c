/* wordcount: a command function in C (DESIGN §3, command ABI).
 *
 * Reads all of stdin and answers one JSON object with the number of bytes, words and
 * lines, e.g. {"bytes":11,"words":2,"lines":1}. Exit code 0 is success; a read error
 * exits 1. Built with Debian's clang and wasi-libc by build.sh. */
#include <ctype.h>
#include <stdio.h>
#include <unistd.h>

int main(void) {
    char buf[4096];
    unsigned long bytes = 0, words = 0, lines = 0;
    int in_word = 0;
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0) {
            fprintf(stderr, "wordcount: cannot read stdin\n");
            return 1;
        }
        if (n == 0) break;
        for (ssize_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)buf[i];
            bytes++;
            if (c == '\n') lines++;
            if (isspace(c)) {
                in_word = 0;
            } else if (!in_word) {
                in_word = 1;
                words++;
            }
        }
    }
    printf("{\"bytes\":%lu,\"words\":%lu,\"lines\":%lu}", bytes, words, lines);
    fprintf(stderr, "wordcount: counted %lu bytes\n", bytes);
    return 0;
}
