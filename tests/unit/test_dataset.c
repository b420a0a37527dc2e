/* fw_dataset: every shape accepted, every kind of bad line rejected with its
 * exact line number and reason, exact counts, NFC + dedupe, whitespace
 * rules, empty records, determinism, the failure threshold, plain text, and
 * the split (golden values from an independent implementation of the rule,
 * then Moby-Dick paragraphs: fraction, disjoint, complete, reproducible,
 * independent of order). */
#include "fw_dataset.h"
#include "fw_digest.h"
#include "fw_err.h"
#include "fw_file.h"
#include "fw_test.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *g_dir;

static const char *s_path(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void s_put(const char *name, const char *data, size_t len) {
    int rc = fw_file_write_atomic(s_path(name), data, len, 0644);
    CHECK_EQ_INT(rc, 0);
}

static char *s_get(const char *name, size_t *len) {
    char *out = NULL;
    if (fw_file_read(s_path(name), (size_t)1 << 30, &out, len) != 0) return NULL;
    return out;
}

/* Counts whitespace-separated words: a stand-in tokenizer. */
static size_t s_words(void *arg, const char *s, size_t n) {
    (*(int *)arg)++;
    size_t w = 0;
    int in = 0;
    for (size_t i = 0; i < n; i++) {
        int sp = s[i] == ' ' || s[i] == '\n' || s[i] == '\t';
        w += !sp && !in;
        in = !sp;
    }
    return w;
}

/* Ingest `data` with opts (NULL: defaults, but no threshold); return the output (caller frees). */
static char *s_ingest(const char *data, const fw_dataset_opts *opts, fw_dataset_report *rep,
                      int *rc) {
    fw_dataset_opts o;
    fw_dataset_opts_init(&o);
    o.max_bad_fraction = 1.0;
    s_put("in.jsonl", data, strlen(data));
    unlink(s_path("out.jsonl"));
    *rc = fw_dataset_ingest(s_path("in.jsonl"), opts ? opts : &o, s_path("out.jsonl"), rep);
    size_t len;
    return *rc ? NULL : s_get("out.jsonl", &len);
}

static void test_shapes(void) {
    const char *in =
        "{\"title\": \"T\", \"text\": \"hello\"}\n"
        "{\"prompt\": \"Q: 2+2=\", \"completion\": \" 4\"}\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \" Hi \"},"
        " {\"role\": \"assistant\", \"content\": \"Hello!\", \"name\": \"bot\"}]}\n"
        "{\"prompt\": \"Capital of France?\", \"choices\": [\" Paris\", \" Rome\"], \"answer\": "
        "0}\n"
        "{\"prompt\": \"Sky?\", \"choices\": [\" blue\", \" green\"], \"answer\": \" blue\"}\n";
    fw_dataset_report rep;
    int rc;
    char *out = s_ingest(in, NULL, &rep, &rc);
    CHECK_EQ_INT(rc, 0);
    REQUIRE(out != NULL);
    CHECK_EQ_INT(rep.format, FW_DATASET_JSONL);
    CHECK_EQ_INT(rep.records_in, 5);
    CHECK_EQ_INT(rep.accepted, 5);
    CHECK_EQ_INT(rep.rejected, 0);
    CHECK_EQ_INT(rep.records_out, 5);
    CHECK_EQ_INT(rep.text_records, 1);
    CHECK_EQ_INT(rep.completion_records, 1);
    CHECK_EQ_INT(rep.chat_records, 1);
    CHECK_EQ_INT(rep.choice_records, 2);
    CHECK_EQ_INT(rep.cleaned, 1); /* only " Hi " was changed */
    /* Canonical lines: sorted keys, compact, extras kept, messages reduced to
     * role + content, prompt / completion / choice edges kept. */
    CHECK_EQ_STR(out,
                 "{\"text\":\"hello\",\"title\":\"T\"}\n"
                 "{\"completion\":\" 4\",\"prompt\":\"Q: 2+2=\"}\n"
                 "{\"messages\":[{\"content\":\"Hi\",\"role\":\"user\"},"
                 "{\"content\":\"Hello!\",\"role\":\"assistant\"}]}\n"
                 "{\"answer\":0,\"choices\":[\" Paris\",\" Rome\"],\"prompt\":\"Capital of "
                 "France?\"}\n"
                 "{\"answer\":\" blue\",\"choices\":[\" blue\",\" green\"],\"prompt\":\"Sky?\"}\n");
    free(out);
    fw_dataset_report_free(&rep);

    /* drop_extra_keys writes only the shape's keys. */
    fw_dataset_opts o;
    fw_dataset_opts_init(&o);
    o.drop_extra_keys = 1;
    out = s_ingest("{\"year\": 1790, \"text\": \"x\"}\n", &o, &rep, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(out, "{\"text\":\"x\"}\n");
    free(out);
    fw_dataset_report_free(&rep);
}

static void test_rejects(void) {
    /* Line numbers count blank lines (5 and 20 are blank). */
    const char *in = "{\"text\": \"ok one\"}\n"                                          /* 1 */
                     "{\"text\": x}\n"                                                   /* 2 */
                     "{\"text\": \"caf\xc3\xa9 \xff\"}\n"                                /* 3 */
                     "[1, 2]\n"                                                          /* 4 */
                     "   \n"                                                             /* 5 */
                     "{\"title\": \"no shape\"}\n"                                       /* 6 */
                     "{\"text\": \"a\", \"messages\": []}\n"                             /* 7 */
                     "{\"text\": 5}\n"                                                   /* 8 */
                     "{\"prompt\": \"p\"}\n"                                             /* 9 */
                     "{\"completion\": \"c\"}\n"                                         /* 10 */
                     "{\"prompt\": 1, \"completion\": \"c\"}\n"                          /* 11 */
                     "{\"messages\": {}}\n"                                              /* 12 */
                     "{\"messages\": []}\n"                                              /* 13 */
                     "{\"messages\": [{\"content\": \"x\"}]}\n"                          /* 14 */
                     "{\"messages\": [{\"role\": \"a b\", \"content\": \"x\"}]}\n"       /* 15 */
                     "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n"      /* 16 */
                     "{\"prompt\": \"p\", \"choices\": [\"a\"], \"answer\": 0}\n"        /* 17 */
                     "{\"prompt\": \"p\", \"choices\": [\"a\", \"b\"], \"answer\": 2}\n" /* 18 */
                     "{\"text\": \"a\", \"text\": \"b\"}\n"                              /* 19 */
                     "\n"                                                                /* 20 */
                     "{\"text\": \"ok two\"}\n"                                          /* 21 */
                     "{\"prompt\": \"p\", \"completion\": \"c\", \"choices\": [\"a\", \"b\"], "
                     "\"answer\": 0}\n"                                /* 22 */
                     "{\"choices\": [\"a\", \"b\"], \"answer\": 0}\n"; /* 23 */
    struct {
        size_t line;
        const char *reason; /* exact, or a prefix when it ends in '*' */
    } want[] = {
        {2, "invalid JSON at column 10: *"},
        {3, "invalid UTF-8 at byte 17"},
        {4, "not a JSON object"},
        {6, "no \"text\", \"prompt\"+\"completion\", \"prompt\"+\"choices\"+\"answer\" or "
            "\"messages\" key"},
        {7, "ambiguous record: *"},
        {8, "\"text\" is not a string"},
        {9, "\"prompt\" without \"completion\""},
        {10, "\"completion\" without \"prompt\""},
        {11, "\"prompt\" is not a string"},
        {12, "\"messages\" is not an array"},
        {13, "\"messages\" is empty"},
        {14, "messages[0].role is missing"},
        {15, "messages[0].role must be 1-32 of [A-Za-z0-9_-]"},
        {16, "\"messages\" has no assistant turn (nothing to learn)"},
        {17, "\"choices\" must be an array of at least 2 strings"},
        {18, "\"answer\" must be a choice index 0..1 or the text of one of the choices"},
        {19, "invalid JSON at column *"}, /* duplicate key, as the engine */
        {22, "ambiguous record: *"},
        {23, "\"choices\" without \"prompt\""},
    };
    size_t nwant = sizeof want / sizeof want[0];
    fw_dataset_report rep;
    int rc;
    char *out = s_ingest(in, NULL, &rep, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(rep.lines, 23);
    CHECK_EQ_INT(rep.records_in, 21);
    CHECK_EQ_INT(rep.accepted, 2);
    CHECK_EQ_INT(rep.rejected, nwant);
    CHECK_EQ_INT(rep.nrejects, nwant);
    for (size_t i = 0; i < nwant && i < rep.nrejects; i++) {
        CHECK_EQ_INT(rep.rejects[i].line, want[i].line);
        size_t wl = strlen(want[i].reason);
        if (want[i].reason[wl - 1] == '*')
            CHECKF(strncmp(rep.rejects[i].reason, want[i].reason, wl - 1) == 0, "line %zu: \"%s\"",
                   want[i].line, rep.rejects[i].reason);
        else
            CHECK_EQ_STR(rep.rejects[i].reason, want[i].reason);
    }
    CHECK(rep.nrejects > 16 && strstr(rep.rejects[16].reason, "duplicate") != NULL);
    CHECK_EQ_STR(out, "{\"text\":\"ok one\"}\n{\"text\":\"ok two\"}\n");
    free(out);
    fw_dataset_report_free(&rep);

    /* A record over max_record_bytes is rejected, and the next line is read normally. */
    fw_dataset_opts o;
    fw_dataset_opts_init(&o);
    o.max_bad_fraction = 1.0;
    o.max_record_bytes = 32;
    out = s_ingest("{\"text\": \"this line is longer than thirty-two bytes\"}\n{\"text\":\"ok\"}\n",
                   &o, &rep, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(rep.rejected, 1);
    CHECK_EQ_INT(rep.nrejects, 1);
    if (rep.nrejects) {
        CHECK_EQ_INT(rep.rejects[0].line, 1);
        CHECK_EQ_STR(rep.rejects[0].reason, "record longer than 32 bytes");
    }
    CHECK_EQ_STR(out, "{\"text\":\"ok\"}\n");
    free(out);
    fw_dataset_report_free(&rep);
}

static void test_counts_and_report(void) {
    /* 9 lines: 1 blank, 1 bad, 1 empty, 2 duplicates (one only after cleaning). */
    const char *in = "{\"text\": \"one two three\"}\n"                 /* 1 out */
                     "{\"text\": \"  one   two three \"}\n"            /* 2 dup after cleaning */
                     "\n"                                              /* 3 blank */
                     "{\"text\": \"\xc3\xa9t\xc3\xa9\"}\n"             /* 4 out: 3 chars, 5 bytes */
                     "not json\n"                                      /* 5 bad */
                     "{\"text\": \" \"}\n"                             /* 6 empty */
                     "{\"prompt\": \"a b\", \"completion\": \" c\"}\n" /* 7 out */
                     "{\"text\": \"one two three\"}\n"                 /* 8 dup */
                     "{\"text\": \"last\"}";                           /* 9 out, no final newline */
    fw_dataset_opts o;
    fw_dataset_opts_init(&o);
    o.max_bad_fraction = 0.5;
    int calls = 0;
    o.count = s_words;
    o.count_arg = &calls;
    fw_dataset_report rep;
    int rc;
    char *out = s_ingest(in, &o, &rep, &rc);
    CHECK_EQ_INT(rc, 0);
    REQUIRE(out != NULL);
    CHECK_EQ_INT(rep.lines, 9);
    CHECK_EQ_INT(rep.records_in, 8);
    CHECK_EQ_INT(rep.accepted, 7);
    CHECK_EQ_INT(rep.rejected, 1);
    CHECK_EQ_INT(rep.empty, 1);
    CHECK_EQ_INT(rep.duplicates, 2);
    CHECK_EQ_INT(rep.records_out, 4);
    CHECK_EQ_INT(rep.accepted, rep.empty + rep.duplicates + rep.records_out);
    CHECK_EQ_INT(rep.bytes_in, strlen(in));
    CHECK_EQ_INT(rep.bytes_out, strlen(out));
    /* content: "one two three" 13 + "été" 5 bytes / 3 chars + "a b" 3 + " c" 2 + "last" 4 */
    CHECK_EQ_INT(rep.content_bytes, 13 + 5 + 3 + 2 + 4);
    CHECK_EQ_INT(rep.chars, 13 + 3 + 3 + 2 + 4);
    CHECK_EQ_INT(rep.tokens, 3 + 1 + 2 + 1 + 1);
    CHECK_EQ_INT(rep.tokens_counted, 1);
    fw_digest d;
    char hex[FW_DIGEST_STR_SIZE];
    CHECK_EQ_INT(fw_digest_file(s_path("out.jsonl"), &d), 0);
    CHECK_EQ_STR(rep.digest, fw_digest_format(&d, hex));

    char *text = fw_dataset_report_text(&rep);
    REQUIRE(text != NULL);
    CHECK(strstr(text, "records out: 4\n") != NULL);
    CHECK(strstr(text, "duplicates: 2\n") != NULL);
    CHECK(strstr(text, "tokens: 8\n") != NULL);
    CHECKF(strstr(text, "  line 5: invalid JSON at column 3: ") != NULL, "%s", text);
    free(text);
    char *js = fw_dataset_report_json(&rep);
    REQUIRE(js != NULL);
    json_t *j = json_loads(js, 0, NULL);
    CHECK(j != NULL);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "records_out")), 4);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "shapes"), "completion")),
                 1);
    CHECK_EQ_STR(json_string_value(json_object_get(j, "digest")), rep.digest);
    CHECK_EQ_INT(json_integer_value(
                     json_object_get(json_array_get(json_object_get(j, "rejects"), 0), "line")),
                 5);
    json_decref(j);
    free(js);
    free(out);
    fw_dataset_report_free(&rep);
}

/* A record much longer than the reader's 64 KiB block, between two short ones. */
static void test_long_line(void) {
    size_t big = 150000;
    char *in = malloc(big + 64);
    REQUIRE(in != NULL);
    strcpy(in, "{\"text\":\"a\"}\n{\"text\":\"");
    size_t k = strlen(in);
    memset(in + k, 'x', big);
    strcpy(in + k + big, "\"}\n{\"text\":\"b\"}\n");
    fw_dataset_report rep;
    int rc;
    char *out = s_ingest(in, NULL, &rep, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(rep.records_out, 3);
    CHECK_EQ_INT(rep.content_bytes, big + 2);
    CHECK_EQ_INT(rep.bytes_out, strlen(in));
    CHECK(out && strcmp(out, in) == 0); /* already canonical */
    free(out);
    free(in);
    fw_dataset_report_free(&rep);
}

static void test_reject_cap(void) {
    char in[4096] = "";
    for (int i = 0; i < 30; i++) strcat(in, "{bad\n");
    strcat(in, "{\"text\":\"fine\"}\n");
    fw_dataset_opts o;
    fw_dataset_opts_init(&o);
    o.max_bad_fraction = 1.0;
    o.max_rejects = 5;
    fw_dataset_report rep;
    int rc;
    char *out = s_ingest(in, &o, &rep, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(rep.rejected, 30);
    CHECK_EQ_INT(rep.nrejects, 5);
    CHECK_EQ_INT(rep.rejects[4].line, 5);
    char *text = fw_dataset_report_text(&rep);
    CHECK(text && strstr(text, "  line 5: invalid JSON") && strstr(text, "  ... and 25 more\n"));
    CHECK(text && !strstr(text, "line 6:"));
    free(text);
    char *js = fw_dataset_report_json(&rep);
    json_t *j = js ? json_loads(js, 0, NULL) : NULL;
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "rejects_more")), 25);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "rejects")), 5);
    json_decref(j);
    free(js);
    free(out);
    fw_dataset_report_free(&rep);
}

static void test_nfc_dedupe(void) {
    /* "café" decomposed (e + U+0301) and precomposed (U+00E9); the JSON
     * escape form of the decomposed one as a third spelling. */
    const char *in = "{\"text\": \"caf"
                     "e\xcc\x81"
                     "\"}\n"
                     "{\"text\": \"caf\xc3\xa9\"}\n"
                     "{\"text\": \"cafe\\u0301\"}\n";
    fw_dataset_report rep;
    int rc;
    char *out = s_ingest(in, NULL, &rep, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(rep.records_out, 1);
    CHECK_EQ_INT(rep.duplicates, 2);
    CHECK_EQ_INT(rep.cleaned, 1);
    CHECK_EQ_STR(out, "{\"text\":\"caf\xc3\xa9\"}\n");
    CHECK_EQ_INT(rep.chars, 4);
    free(out);
    fw_dataset_report_free(&rep);

    /* Without dedupe both stay, both precomposed. */
    fw_dataset_opts o;
    fw_dataset_opts_init(&o);
    o.keep_duplicates = 1;
    out = s_ingest(in, &o, &rep, &rc);
    CHECK_EQ_INT(rep.records_out, 3);
    CHECK_EQ_STR(out, "{\"text\":\"caf\xc3\xa9\"}\n{\"text\":\"caf\xc3\xa9\"}\n"
                      "{\"text\":\"caf\xc3\xa9\"}\n");
    free(out);
    fw_dataset_report_free(&rep);
}

/* The cleaned value of `field` for one record given as a JSON line. */
static char *s_clean1(const char *line, const char *field, fw_dataset_ws ws) {
    fw_dataset_opts o;
    fw_dataset_opts_init(&o);
    o.whitespace = ws;
    fw_dataset_report rep;
    int rc;
    char *out = s_ingest(line, &o, &rep, &rc);
    fw_dataset_report_free(&rep);
    json_t *j = out ? json_loads(out, 0, NULL) : NULL;
    free(out);
    char *v = j ? strdup(json_string_value(json_object_get(j, field))) : NULL;
    json_decref(j);
    return v;
}

static void test_whitespace(void) {
    struct {
        const char *line, *field, *want;
        fw_dataset_ws ws;
    } cases[] = {
        {"{\"text\": \"  a \\t  b  \"}", "text", "a b", FW_DATASET_WS_NORMALIZE},
        {"{\"text\": \"a\\r\\nb\\rc\"}", "text", "a\nb\nc", FW_DATASET_WS_NORMALIZE},
        {"{\"text\": \"p1\\n\\n\\n\\np2\"}", "text", "p1\n\np2", FW_DATASET_WS_NORMALIZE},
        {"{\"text\": \"p1\\r\\n\\r\\np2\"}", "text", "p1\n\np2", FW_DATASET_WS_NORMALIZE},
        {"{\"text\": \"a  \\n   b\"}", "text", "a\nb", FW_DATASET_WS_NORMALIZE},
        {"{\"text\": \"a\\n \\t \\nb\"}", "text", "a\n\nb", FW_DATASET_WS_NORMALIZE},
        {"{\"text\": \"\\n\\n x \\n\\n\"}", "text", "x", FW_DATASET_WS_NORMALIZE},
        /* Non-ASCII whitespace (NBSP) is content, not collapsed. */
        {"{\"text\": \"a\\u00a0\\u00a0b\"}", "text",
         "a\xc2\xa0\xc2\xa0"
         "b",
         FW_DATASET_WS_NORMALIZE},
        /* Edges of prompts and completions carry tokenisation: one space kept. */
        {"{\"prompt\": \"Q:   \", \"completion\": \"x\"}", "prompt",
         "Q: ", FW_DATASET_WS_NORMALIZE},
        {"{\"prompt\": \"Q\", \"completion\": \" \\t Paris\"}", "completion", " Paris",
         FW_DATASET_WS_NORMALIZE},
        {"{\"prompt\": \"Q:\\n\\n\\n\", \"completion\": \"x\"}", "prompt", "Q:\n\n",
         FW_DATASET_WS_NORMALIZE},
        /* KEEP: only line endings change. */
        {"{\"text\": \"  def f():\\r\\n      return 1  \"}", "text", "  def f():\n      return 1  ",
         FW_DATASET_WS_KEEP},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = s_clean1(cases[i].line, cases[i].field, cases[i].ws);
        CHECKF(got && strcmp(got, cases[i].want) == 0, "case %zu: got \"%s\"", i,
               got ? got : "(null)");
        free(got);
    }
}

static void test_empty(void) {
    const char *in = "{\"text\": \"\"}\n"
                     "{\"text\": \"   \\n\\t \"}\n"
                     "{\"prompt\": \"x\", \"completion\": \"\"}\n"
                     "{\"prompt\": \"x\", \"completion\": \"  \"}\n"
                     "{\"messages\": [{\"role\": \"user\", \"content\": \" \"},"
                     " {\"role\": \"assistant\", \"content\": \"\"}]}\n"
                     "{\"messages\": [{\"role\": \"user\", \"content\": \"\"},"
                     " {\"role\": \"assistant\", \"content\": \"hi\"}]}\n";
    fw_dataset_report rep;
    int rc;
    char *out = s_ingest(in, NULL, &rep, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(rep.accepted, 6);
    CHECK_EQ_INT(rep.rejected, 0);
    CHECK_EQ_INT(rep.empty, 5);
    CHECK_EQ_INT(rep.records_out, 1);
    CHECK_EQ_STR(out, "{\"messages\":[{\"content\":\"\",\"role\":\"user\"},"
                      "{\"content\":\"hi\",\"role\":\"assistant\"}]}\n");
    free(out);
    fw_dataset_report_free(&rep);

    /* Nothing left at all is an error, and no output is written. */
    out = s_ingest("{\"text\": \"\"}\n\n", NULL, &rep, &rc);
    CHECK_EQ_INT(rc, FW_EINVAL);
    CHECK(strstr(fw_err_detail(), "no record left") != NULL);
    CHECK(access(s_path("out.jsonl"), F_OK) != 0);
    CHECK_EQ_STR(rep.digest, "");
    fw_dataset_report_free(&rep);
}

static void test_determinism(void) {
    const char *in = "{\"z\": 1, \"text\": \"  b\\u0301 \", \"a\": [1, {\"y\": 2, \"x\": 3}]}\n"
                     "{\"prompt\": \"p \", \"completion\": \"c\"}\n"
                     "Not JSON at all\n";
    s_put("det.jsonl", in, strlen(in));
    fw_dataset_report r1, r2, r3;
    CHECK_EQ_INT(fw_dataset_ingest(s_path("det.jsonl"), NULL, s_path("det1.jsonl"), &r1),
                 FW_EINVAL); /* 1 of 3 bad > 1% */
    fw_dataset_report_free(&r1);
    fw_dataset_opts o;
    fw_dataset_opts_init(&o);
    o.max_bad_fraction = 0.5;
    CHECK_EQ_INT(fw_dataset_ingest(s_path("det.jsonl"), &o, s_path("det1.jsonl"), &r1), 0);
    CHECK_EQ_INT(fw_dataset_ingest(s_path("det.jsonl"), &o, s_path("det2.jsonl"), &r2), 0);
    size_t l1 = 0, l2 = 0, l3 = 0;
    char *a = s_get("det1.jsonl", &l1), *b = s_get("det2.jsonl", &l2);
    CHECK(a && b && l1 == l2 && memcmp(a, b, l1) == 0);
    CHECK_EQ_STR(r1.digest, r2.digest);
    CHECK_EQ_STR(a, "{\"a\":[1,{\"x\":3,\"y\":2}],\"text\":\"b\xcc\x81\",\"z\":1}\n"
                    "{\"completion\":\"c\",\"prompt\":\"p \"}\n");
    /* Idempotent: the output ingests to itself, byte for byte. */
    CHECK_EQ_INT(fw_dataset_ingest(s_path("det1.jsonl"), &o, s_path("det3.jsonl"), &r3), 0);
    char *c = s_get("det3.jsonl", &l3);
    CHECK(c && l3 == l1 && memcmp(a, c, l1) == 0);
    CHECK_EQ_STR(r3.digest, r1.digest);
    CHECK_EQ_INT(r3.cleaned, 0);
    free(a), free(b), free(c);
    fw_dataset_report_free(&r1);
    fw_dataset_report_free(&r2);
    fw_dataset_report_free(&r3);
}

static void test_threshold(void) {
    /* 2 bad of 10: fails at 0.1 (2 > 1.0), passes at exactly 0.2 (2 > 2.0 is false). */
    char in[1024] = "";
    for (int i = 0; i < 10; i++) {
        char line[64];
        snprintf(line, sizeof line, i == 3 || i == 7 ? "{\"text\": %d}\n" : "{\"text\": \"r%d\"}\n",
                 i);
        strcat(in, line);
    }
    fw_dataset_opts o;
    fw_dataset_opts_init(&o);
    o.max_bad_fraction = 0.1;
    fw_dataset_report rep;
    int rc;
    s_put("out.jsonl", "old\n", 4);
    s_put("in.jsonl", in, strlen(in));
    rc = fw_dataset_ingest(s_path("in.jsonl"), &o, s_path("out.jsonl"), &rep);
    CHECK_EQ_INT(rc, FW_EINVAL);
    CHECKF(strstr(fw_err_detail(), "2 of 10 records rejected, more than the allowed fraction 0.1"
                                   "; first: line 4: \"text\" is not a string") != NULL,
           "%s", fw_err_detail());
    /* The report is still there for the user; the old output is untouched. */
    CHECK_EQ_INT(rep.rejected, 2);
    CHECK_EQ_INT(rep.nrejects, 2);
    CHECK_EQ_INT(rep.rejects[1].line, 8);
    size_t len;
    char *old = s_get("out.jsonl", &len);
    CHECK_EQ_STR(old, "old\n");
    CHECK(access(s_path("out.jsonl.new"), F_OK) != 0);
    free(old);
    fw_dataset_report_free(&rep);
    o.max_bad_fraction = 0.2;
    rc = fw_dataset_ingest(s_path("in.jsonl"), &o, s_path("out.jsonl"), &rep);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(rep.records_out, 8);
    fw_dataset_report_free(&rep);

    /* Bad arguments and files. */
    o.max_bad_fraction = 1.5;
    CHECK_EQ_INT(fw_dataset_ingest(s_path("in.jsonl"), &o, s_path("out.jsonl"), NULL), FW_EINVAL);
    CHECK_EQ_INT(fw_dataset_ingest(s_path("missing.jsonl"), NULL, s_path("o.jsonl"), NULL),
                 FW_ENOTFOUND);
    CHECK(strstr(fw_err_detail(), "missing.jsonl") != NULL);
}

static void test_plain_text(void) {
    const char *in = "\xEF\xBB\xBF"
                     "First  paragraph,\r\n"              /* 1 */
                     "second line.\r\n"                   /* 2 */
                     "\r\n"                               /* 3 */
                     "   \n"                              /* 4 */
                     "Bad paragraph\n"                    /* 5 */
                     "with \xc3\x28 here\n"               /* 6 */
                     "\n"                                 /* 7 */
                     "Third \t paragraph.\n"              /* 8 */
                     "\n"                                 /* 9 */
                     "First  paragraph,\nsecond line.\n"; /* 10-11: duplicate */
    fw_dataset_opts o;
    fw_dataset_opts_init(&o);
    o.max_bad_fraction = 1.0;
    fw_dataset_report rep;
    int rc;
    char *out = s_ingest(in, &o, &rep, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(rep.format, FW_DATASET_TEXT); /* sniffed */
    CHECK_EQ_INT(rep.lines, 11);
    CHECK_EQ_INT(rep.records_in, 4);
    CHECK_EQ_INT(rep.rejected, 1);
    CHECK_EQ_INT(rep.duplicates, 1);
    CHECK_EQ_INT(rep.records_out, 2);
    if (rep.nrejects) {
        CHECK_EQ_INT(rep.rejects[0].line, 6); /* the bad line itself */
        CHECK_EQ_STR(rep.rejects[0].reason, "invalid UTF-8 at byte 6");
    }
    CHECK_EQ_STR(out, "{\"text\":\"First paragraph,\\nsecond line.\"}\n"
                      "{\"text\":\"Third paragraph.\"}\n");
    free(out);
    fw_dataset_report_free(&rep);

    /* One record per line. */
    o.text_unit = FW_DATASET_LINES;
    out = s_ingest(in, &o, &rep, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(rep.records_in, 7);
    CHECK_EQ_INT(rep.rejected, 1);
    CHECK_EQ_INT(rep.duplicates, 2);
    CHECK_EQ_STR(out, "{\"text\":\"First paragraph,\"}\n{\"text\":\"second line.\"}\n"
                      "{\"text\":\"Bad paragraph\"}\n{\"text\":\"Third paragraph.\"}\n");
    free(out);
    fw_dataset_report_free(&rep);

    /* A NUL byte in text is refused (JSON cannot carry it to the engine). */
    o.text_unit = FW_DATASET_PARAGRAPHS;
    s_put("nul.txt", "ok\n\nx\0y\n", 8);
    CHECK_EQ_INT(fw_dataset_ingest(s_path("nul.txt"), &o, s_path("nul.jsonl"), &rep), 0);
    CHECK_EQ_INT(rep.rejected, 1);
    if (rep.nrejects) CHECK_EQ_STR(rep.rejects[0].reason, "NUL byte at byte 2");
    fw_dataset_report_free(&rep);

    /* Forcing JSONL on text rejects every line. */
    o.format = FW_DATASET_JSONL;
    o.max_bad_fraction = 0.5;
    out = s_ingest("just words\n", &o, &rep, &rc);
    CHECK_EQ_INT(rc, FW_EINVAL);
    fw_dataset_report_free(&rep);
}

/* The rule, pinned to values from an independent implementation (Python:
 * sha256(seed.to_bytes(8, "big") + sha256(canonical json)) ...). */
static void test_split_golden(void) {
    fw_digest d, e;
    char hex[FW_DIGEST_STR_SIZE];
    CHECK_EQ_INT(fw_dataset_record_digest("{\"text\":\"alpha\"}", 16, &d), 0);
    CHECK_EQ_STR(fw_digest_format(&d, hex),
                 "sha256:fd95ccc5f06aab4d7e075f7790e2ef574260a505a4c9aa7ecf858f5a0b8dea83");
    /* Extra keys, key order and spacing do not change a record's digest. */
    const char *other = "{ \"title\": \"t\",  \"text\" : \"alpha\" }";
    CHECK_EQ_INT(fw_dataset_record_digest(other, strlen(other), &e), 0);
    CHECK(fw_digest_equal(&d, &e));
    CHECK_EQ_INT(fw_dataset_record_digest("{\"text\":1}", 10, &e), FW_EINVAL);

    const char *in = "{\"text\":\"alpha\"}\n{\"text\":\"beta\"}\n{\"text\":\"gamma\"}\n"
                     "{\"text\":\"delta\"}\n{\"completion\":\" A\",\"prompt\":\"Q: \"}\n"
                     "{\"text\":\"epsilon\"}\n{\"text\":\"zeta\"}\n{\"text\":\"eta\"}\n";
    s_put("g.jsonl", in, strlen(in));
    fw_dataset_split_counts c;
    CHECK_EQ_INT(
        fw_dataset_split(s_path("g.jsonl"), 0.6, 7, s_path("g.train"), s_path("g.eval"), &c), 0);
    CHECK_EQ_INT(c.records, 8);
    CHECK_EQ_INT(c.eval, 3);
    size_t len;
    char *ev = s_get("g.eval", &len), *tr = s_get("g.train", &len);
    CHECK_EQ_STR(ev, "{\"text\":\"beta\"}\n{\"completion\":\" A\",\"prompt\":\"Q: \"}\n"
                     "{\"text\":\"eta\"}\n");
    CHECK_EQ_STR(tr, "{\"text\":\"alpha\"}\n{\"text\":\"gamma\"}\n{\"text\":\"delta\"}\n"
                     "{\"text\":\"epsilon\"}\n{\"text\":\"zeta\"}\n");
    fw_digest fd;
    CHECK_EQ_INT(fw_digest_file(s_path("g.eval"), &fd), 0);
    CHECK_EQ_STR(c.eval_digest, fw_digest_format(&fd, hex));
    free(ev), free(tr);

    /* holdout 0 and 1 are all-train and all-eval. */
    CHECK_EQ_INT(fw_dataset_split(s_path("g.jsonl"), 0.0, 7, s_path("g.t"), s_path("g.e"), &c), 0);
    CHECK_EQ_INT(c.train, 8);
    CHECK_EQ_INT(fw_dataset_split(s_path("g.jsonl"), 1.0, 7, s_path("g.t"), s_path("g.e"), &c), 0);
    CHECK_EQ_INT(c.eval, 8);

    /* Errors: bad fraction, same outputs, a bad line named by number. */
    CHECK_EQ_INT(fw_dataset_split(s_path("g.jsonl"), 1.5, 7, s_path("g.t"), s_path("g.e"), NULL),
                 FW_EINVAL);
    CHECK_EQ_INT(fw_dataset_split(s_path("g.jsonl"), 0.5, 7, s_path("g.t"), s_path("g.t"), NULL),
                 FW_EINVAL);
    const char *bad = "{\"text\":\"a\"}\n\n{\"text\":2}\n";
    s_put("bad.jsonl", bad, strlen(bad));
    CHECK_EQ_INT(fw_dataset_split(s_path("bad.jsonl"), 0.5, 7, s_path("b.t"), s_path("b.e"), NULL),
                 FW_EINVAL);
    CHECKF(strstr(fw_err_detail(), "line 3: \"text\" is not a string") != NULL, "%s",
           fw_err_detail());
    CHECK(access(s_path("b.t"), F_OK) != 0);
}

/* Lines of a file, sorted (the caller frees each and the array). */
static int s_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char **s_lines(const char *name, size_t *n) {
    size_t len;
    char *s = s_get(name, &len);
    *n = 0;
    if (!s) return NULL;
    size_t cap = 16;
    char **v = malloc(cap * sizeof *v);
    for (char *save = NULL, *t = strtok_r(s, "\n", &save); t; t = strtok_r(NULL, "\n", &save)) {
        if (*n == cap) v = realloc(v, (cap *= 2) * sizeof *v);
        v[(*n)++] = strdup(t);
    }
    free(s);
    qsort(v, *n, sizeof *v, s_cmp);
    return v;
}

static void s_free_lines(char **v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

static void test_split_moby(void) {
    /* Moby-Dick as plain text: the chapters' paragraphs, blank-line separated. */
    json_error_t jerr;
    FILE *f = fopen(fw_test_shared("corpora/moby-dick.jsonl"), "r");
    REQUIRE(f != NULL);
    FILE *t = fopen(s_path("moby.txt"), "w");
    REQUIRE(t != NULL);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, &jerr);
        if (j) fprintf(t, "%s\n\n", json_string_value(json_object_get(j, "text")));
        json_decref(j);
    }
    free(line);
    fclose(f);
    fclose(t);
    fw_dataset_report rep;
    CHECK_EQ_INT(fw_dataset_ingest(s_path("moby.txt"), NULL, s_path("moby.jsonl"), &rep), 0);
    CHECK_EQ_INT(rep.format, FW_DATASET_TEXT);
    CHECK_EQ_INT(rep.rejected, 0);
    CHECKF(rep.records_out > 2000, "%zu paragraphs", rep.records_out);
    size_t n = rep.records_out;
    fw_dataset_report_free(&rep);

    fw_dataset_split_counts c1, c2, c3;
    REQUIRE(fw_dataset_split(s_path("moby.jsonl"), 0.1, 42, s_path("m.train"), s_path("m.eval"),
                             &c1) == 0);
    CHECK_EQ_INT(c1.records, n);
    CHECK_EQ_INT(c1.train + c1.eval, n);
    double frac = (double)c1.eval / (double)n;
    CHECKF(frac > 0.07 && frac < 0.13, "eval fraction %.4f", frac); /* +-3 sigma is +-0.018 */

    /* Disjoint and complete: train + eval is the input, line for line. */
    size_t na, nt, ne;
    char **all = s_lines("moby.jsonl", &na), **tr = s_lines("m.train", &nt),
         **ev = s_lines("m.eval", &ne);
    CHECK_EQ_INT(nt, c1.train);
    CHECK_EQ_INT(ne, c1.eval);
    REQUIRE(all && tr && ev && na == nt + ne);
    size_t i = 0, j = 0, bad = 0;
    for (size_t k = 0; k < na; k++) {
        if (i < nt && strcmp(all[k], tr[i]) == 0)
            i++;
        else if (j < ne && strcmp(all[k], ev[j]) == 0)
            j++;
        else
            bad++;
    }
    CHECK_EQ_INT(bad, 0);

    /* Same seed, same split; another seed, another split. */
    CHECK_EQ_INT(
        fw_dataset_split(s_path("moby.jsonl"), 0.1, 42, s_path("m2.train"), s_path("m2.eval"), &c2),
        0);
    CHECK_EQ_STR(c2.eval_digest, c1.eval_digest);
    CHECK_EQ_STR(c2.train_digest, c1.train_digest);
    CHECK_EQ_INT(
        fw_dataset_split(s_path("moby.jsonl"), 0.1, 43, s_path("m3.train"), s_path("m3.eval"), &c3),
        0);
    CHECK(strcmp(c3.eval_digest, c1.eval_digest) != 0);

    /* A record's side does not depend on order: split the file reversed. */
    FILE *rv = fopen(s_path("moby.rev"), "w");
    REQUIRE(rv != NULL);
    size_t nl;
    char **orig = s_lines("moby.jsonl", &nl); /* sorted order is a different order too */
    for (size_t k = nl; k-- > 0;) fprintf(rv, "%s\n", orig[k]);
    fclose(rv);
    s_free_lines(orig, nl);
    CHECK_EQ_INT(
        fw_dataset_split(s_path("moby.rev"), 0.1, 42, s_path("r.train"), s_path("r.eval"), &c3), 0);
    size_t nre;
    char **rev = s_lines("r.eval", &nre);
    CHECK_EQ_INT(nre, ne);
    int same = nre == ne;
    for (size_t k = 0; same && k < ne; k++) same = strcmp(rev[k], ev[k]) == 0;
    CHECK(same);
    s_free_lines(rev, nre);
    s_free_lines(all, na);
    s_free_lines(tr, nt);
    s_free_lines(ev, ne);
}

int main(void) {
    g_dir = fw_test_tmpdir("dataset");
    if (!g_dir) return 1;
    RUN(test_shapes);
    RUN(test_rejects);
    RUN(test_counts_and_report);
    RUN(test_long_line);
    RUN(test_reject_cap);
    RUN(test_nfc_dedupe);
    RUN(test_whitespace);
    RUN(test_empty);
    RUN(test_determinism);
    RUN(test_threshold);
    RUN(test_plain_text);
    RUN(test_split_golden);
    RUN(test_split_moby);
    fw_test_rmtree(g_dir);
    free(g_dir);
    return fw_test_summary();
}
