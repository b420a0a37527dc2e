/* fuzz_replay.c - a plain main() for the fuzz target: feed it every file of
 * the given files and directories (missing ones are skipped). Compiled by
 * gcc in every build and run as a unit test over the seed corpus, so the
 * target and the corpus keep working without clang.
 *
 *   proto_fuzz_replay [--min N] PATH...     fails if fewer than N inputs ran */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int s_run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    size_t got = buf && n > 0 ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!buf) return 0;
    /* An exact-size buffer so memory checkers catch reads past the input. */
    uint8_t *exact = malloc(got ? got : 1);
    memcpy(exact, buf, got);
    free(buf);
    LLVMFuzzerTestOneInput(exact, got);
    free(exact);
    return 1;
}

int main(int argc, char **argv) {
    long min = 1, ran = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--min") && i + 1 < argc) {
            min = strtol(argv[++i], NULL, 10);
            continue;
        }
        struct stat st;
        if (stat(argv[i], &st) != 0) continue;
        if (!S_ISDIR(st.st_mode)) {
            ran += s_run_file(argv[i]);
            continue;
        }
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) ran += s_run_file(path);
        }
        if (d) closedir(d);
    }
    printf("replayed %ld inputs (need %ld)\n%d passed, %d failed\n", ran, min, ran >= min ? 1 : 0,
           ran >= min ? 0 : 1);
    return ran >= min ? 0 : 1;
}
