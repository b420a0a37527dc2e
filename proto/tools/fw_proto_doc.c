/* fw_proto_doc - print, check or update the generated message reference.
 *
 *   fw_proto_doc                      print it to stdout
 *   fw_proto_doc --check  FILE.md     exit 1 if FILE's GENERATED section differs
 *   fw_proto_doc --update FILE.md     rewrite FILE's GENERATED section
 *
 * The section lies between the BEGIN and END markers below; the rest of the
 * file is hand-written and left alone. */
#include "fw_proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BEGIN_MARK "<!-- BEGIN GENERATED: fw_proto_doc -->\n"
#define END_MARK   "<!-- END GENERATED: fw_proto_doc -->"

static char *s_slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap);
            if (!nb) break;
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    *len = n;
    return buf;
}

int main(int argc, char **argv) {
    char *gen = NULL;
    size_t gen_len = 0;
    FILE *mem = open_memstream(&gen, &gen_len);
    if (!mem || fw_proto_doc_write(mem) < 0) return 2;
    fclose(mem);
    if (argc == 1) {
        fwrite(gen, 1, gen_len, stdout);
        free(gen);
        return 0;
    }
    if (argc != 3 || (strcmp(argv[1], "--check") && strcmp(argv[1], "--update"))) {
        fprintf(stderr, "usage: fw_proto_doc [--check|--update FILE.md]\n");
        return 2;
    }
    size_t len;
    char *doc = s_slurp(argv[2], &len);
    if (!doc) {
        fprintf(stderr, "fw_proto_doc: cannot read %s\n", argv[2]);
        return 2;
    }
    char *b = strstr(doc, BEGIN_MARK), *e = b ? strstr(b, END_MARK) : NULL;
    if (!b || !e) {
        fprintf(stderr, "fw_proto_doc: %s lacks the GENERATED markers\n", argv[2]);
        return 2;
    }
    b += strlen(BEGIN_MARK);
    int rc = 0;
    if (!strcmp(argv[1], "--check")) {
        if ((size_t)(e - b) != gen_len || memcmp(b, gen, gen_len) != 0) {
            fprintf(stderr,
                    "fw_proto_doc: %s is out of date with proto/fw_messages.def;\n"
                    "HINT: run build/proto/fw_proto_doc --update docs/protocol.md\n",
                    argv[2]);
            rc = 1;
        } else {
            printf("fw_proto_doc: %s is up to date (%zu bytes generated)\n", argv[2], gen_len);
        }
    } else {
        FILE *f = fopen(argv[2], "wb");
        if (!f) return 2;
        fwrite(doc, 1, (size_t)(b - doc), f);
        fwrite(gen, 1, gen_len, f);
        fputs(e, f);
        rc = fclose(f) ? 2 : 0;
    }
    free(doc);
    free(gen);
    return rc;
}
