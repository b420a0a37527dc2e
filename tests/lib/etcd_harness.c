/* etcd_harness.c - start, kill, restart and tear down real etcd members.
 * See etcd_harness.h for the guarantees. */
#include "etcd_harness.h"

#include "fw_test.h"
#include "fw_time.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define S_START_TRIES 3        /* fresh ports after a bind race with another test */
#define S_HEALTHY_MS  20000    /* 2 cores shared by several test runs: be patient */

typedef struct {
    char name[16];
    int client_port;
    int peer_port;
    char client_url[64];
    char peer_url[64];
    char data_dir[512];
    char log[512];
    pid_t pid; /* 0: not running */
} s_member;

struct fw_etcd_harness {
    int n;
    s_member m[FW_ETCD_HARNESS_MAX];
    char *dir;
    char endpoints[FW_ETCD_HARNESS_MAX * 64];
    char initial_cluster[FW_ETCD_HARNESS_MAX * 96];
    char token[64];
    struct fw_etcd_harness *next; /* live list, for the atexit handler */
};

static fw_etcd_harness *s_live;
static bool s_atexit_done;

static void s_kill_member(s_member *m) {
    if (m->pid <= 0) return;
    kill(-m->pid, SIGKILL); /* its process group */
    kill(m->pid, SIGKILL);
    while (waitpid(m->pid, NULL, 0) < 0 && errno == EINTR) {}
    m->pid = 0;
}

static void s_atexit(void) {
    while (s_live) {
        fw_etcd_harness *h = s_live;
        s_live = h->next;
        for (int i = 0; i < h->n; i++) s_kill_member(&h->m[i]);
        fw_test_rmtree(h->dir);
        /* The harness memory itself is left: the process is exiting. */
    }
}

static void s_unlink_live(fw_etcd_harness *h) {
    for (fw_etcd_harness **p = &s_live; *p; p = &(*p)->next)
        if (*p == h) {
            *p = h->next;
            return;
        }
}

static const char *s_etcd_bin(void) {
    const char *b = getenv("FW_ETCD_BIN");
    return b && *b ? b : "etcd";
}

static void s_print_log(const s_member *m) {
    FILE *f = fopen(m->log, "r");
    if (!f) return;
    char line[512];
    int n = 0;
    fprintf(stderr, "---- %s (last lines) ----\n", m->log);
    /* etcd at error level is short; print at most 40 lines. */
    while (fgets(line, sizeof line, f) && n++ < 40) fputs(line, stderr);
    fclose(f);
}

static int s_spawn(fw_etcd_harness *h, s_member *m) {
    char a_name[64], a_data[600], a_lc[128], a_ac[128], a_lp[128], a_ap[128], a_ic[600],
        a_tok[128];
    snprintf(a_name, sizeof a_name, "--name=%s", m->name);
    snprintf(a_data, sizeof a_data, "--data-dir=%s", m->data_dir);
    snprintf(a_lc, sizeof a_lc, "--listen-client-urls=%s", m->client_url);
    snprintf(a_ac, sizeof a_ac, "--advertise-client-urls=%s", m->client_url);
    snprintf(a_lp, sizeof a_lp, "--listen-peer-urls=%s", m->peer_url);
    snprintf(a_ap, sizeof a_ap, "--initial-advertise-peer-urls=%s", m->peer_url);
    snprintf(a_ic, sizeof a_ic, "--initial-cluster=%s", h->initial_cluster);
    snprintf(a_tok, sizeof a_tok, "--initial-cluster-token=%s", h->token);
    /* Fast failure detection for tests: heartbeat 50 ms, and the election
     * timeout at 10 heartbeats (etcd wants at least 5). */
    char *argv[] = {(char *)s_etcd_bin(), a_name, a_data, a_lc, a_ac, a_lp, a_ap, a_ic,
                    "--initial-cluster-state=new", a_tok, "--logger=zap", "--log-level=error",
                    "--heartbeat-interval=50", "--election-timeout=500",
                    "--snapshot-count=10000", NULL};
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "etcd_harness: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1); /* the parent died before prctl */
        int fd = open(m->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0) dup2(nul, 0);
        execvp(argv[0], argv);
        execv("/usr/bin/etcd", argv);
        fprintf(stderr, "etcd_harness: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid); /* also here, so kill(-pid) works whoever runs first */
    m->pid = pid;
    return 0;
}

static size_t s_sink(char *p, size_t sz, size_t nm, void *ud) {
    char *buf = ud;
    size_t have = strlen(buf), n = sz * nm, room = 1023 - have; /* buffers are 1024 */
    memcpy(buf + have, p, n < room ? n : room);
    buf[have + (n < room ? n : room)] = '\0';
    return n;
}

/* 1 healthy, 0 not yet, -1 the process has exited. */
static int s_health(s_member *m) {
    if (m->pid <= 0) return -1;
    int st;
    if (waitpid(m->pid, &st, WNOHANG) == m->pid) {
        m->pid = 0;
        return -1;
    }
    CURL *c = curl_easy_init();
    if (!c) return 0;
    char url[128], body[1024] = "";
    snprintf(url, sizeof url, "%s/health", m->client_url);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    return cc == CURLE_OK && strstr(body, "\"true\"") ? 1 : 0;
}

int fw_etcd_harness_wait_healthy(fw_etcd_harness *h, int i, int timeout_ms) {
    if (!h || i < 0 || i >= h->n) return -1;
    int64_t deadline = fw_deadline_ms(timeout_ms);
    for (;;) {
        int r = s_health(&h->m[i]);
        if (r == 1) return 0;
        if (r < 0 || fw_remaining_ms(deadline) == 0) return -1;
        fw_sleep_ms(50);
    }
}

static void s_assign_ports(fw_etcd_harness *h) {
    int used[2 * FW_ETCD_HARNESS_MAX];
    int nused = 0;
    for (int i = 0; i < h->n; i++) {
        s_member *m = &h->m[i];
        for (int k = 0; k < 2; k++) {
            int p;
            bool dup;
            do {
                p = fw_test_free_port();
                dup = false;
                for (int u = 0; u < nused; u++) dup |= used[u] == p;
            } while (dup);
            used[nused++] = p;
            if (k == 0) m->client_port = p;
            else m->peer_port = p;
        }
        snprintf(m->client_url, sizeof m->client_url, "http://127.0.0.1:%d", m->client_port);
        snprintf(m->peer_url, sizeof m->peer_url, "http://127.0.0.1:%d", m->peer_port);
    }
    size_t e = 0, c = 0;
    for (int i = 0; i < h->n; i++) {
        e += (size_t)snprintf(h->endpoints + e, sizeof h->endpoints - e, "%s%s", i ? "," : "",
                              h->m[i].client_url);
        c += (size_t)snprintf(h->initial_cluster + c, sizeof h->initial_cluster - c, "%s%s=%s",
                              i ? "," : "", h->m[i].name, h->m[i].peer_url);
    }
}

static int s_start_all(fw_etcd_harness *h, int attempt) {
    snprintf(h->token, sizeof h->token, "fw-%d-%d", (int)getpid(), attempt);
    s_assign_ports(h);
    for (int i = 0; i < h->n; i++) {
        s_member *m = &h->m[i];
        snprintf(m->data_dir, sizeof m->data_dir, "%s/%s.%d", h->dir, m->name, attempt);
        if (s_spawn(h, m) < 0) return -1;
    }
    int64_t deadline = fw_deadline_ms(S_HEALTHY_MS);
    for (int i = 0; i < h->n; i++) {
        int left = (int)fw_remaining_ms(deadline);
        if (fw_etcd_harness_wait_healthy(h, i, left > 0 ? left : 1) < 0) {
            fprintf(stderr, "etcd_harness: member %s (%s) did not become healthy (attempt %d)\n",
                    h->m[i].name, h->m[i].client_url, attempt + 1);
            s_print_log(&h->m[i]);
            return -1;
        }
    }
    return 0;
}

fw_etcd_harness *fw_etcd_harness_new(int members) {
    if (members < 1 || members > FW_ETCD_HARNESS_MAX) {
        fprintf(stderr, "etcd_harness: %d members (1..%d)\n", members, FW_ETCD_HARNESS_MAX);
        return NULL;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!s_atexit_done) {
        atexit(s_atexit);
        s_atexit_done = true;
    }
    fw_etcd_harness *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->n = members;
    h->dir = fw_test_tmpdir("etcd");
    if (!h->dir) {
        fprintf(stderr, "etcd_harness: cannot make a temporary directory\n");
        free(h);
        return NULL;
    }
    for (int i = 0; i < members; i++) {
        snprintf(h->m[i].name, sizeof h->m[i].name, "m%d", i);
        snprintf(h->m[i].log, sizeof h->m[i].log, "%s/m%d.log", h->dir, i);
    }
    h->next = s_live;
    s_live = h;
    for (int attempt = 0; attempt < S_START_TRIES; attempt++) {
        if (s_start_all(h, attempt) == 0) return h;
        for (int i = 0; i < h->n; i++) s_kill_member(&h->m[i]);
    }
    fprintf(stderr, "etcd_harness: could not start %d member(s) with %s (is etcd installed?)\n",
            members, s_etcd_bin());
    fw_etcd_harness_destroy(&h);
    return NULL;
}

void fw_etcd_harness_destroy(fw_etcd_harness **hp) {
    if (!hp || !*hp) return;
    fw_etcd_harness *h = *hp;
    s_unlink_live(h);
    for (int i = 0; i < h->n; i++) s_kill_member(&h->m[i]);
    fw_test_rmtree(h->dir);
    free(h->dir);
    free(h);
    *hp = NULL;
}

int fw_etcd_harness_members(const fw_etcd_harness *h) { return h ? h->n : 0; }
const char *fw_etcd_harness_endpoints(const fw_etcd_harness *h) { return h->endpoints; }

const char *fw_etcd_harness_endpoint(const fw_etcd_harness *h, int i) {
    return h && i >= 0 && i < h->n ? h->m[i].client_url : NULL;
}

int fw_etcd_harness_kill(fw_etcd_harness *h, int i) {
    if (!h || i < 0 || i >= h->n || h->m[i].pid <= 0) return -1;
    s_kill_member(&h->m[i]);
    return 0;
}

int fw_etcd_harness_stop(fw_etcd_harness *h, int i) {
    if (!h || i < 0 || i >= h->n || h->m[i].pid <= 0) return -1;
    s_member *m = &h->m[i];
    kill(m->pid, SIGTERM);
    int64_t deadline = fw_deadline_ms(5000);
    while (fw_remaining_ms(deadline) > 0) {
        if (waitpid(m->pid, NULL, WNOHANG) == m->pid) {
            kill(-m->pid, SIGKILL); /* anything it left in its group */
            m->pid = 0;
            return 0;
        }
        fw_sleep_ms(20);
    }
    s_kill_member(m);
    return 0;
}

int fw_etcd_harness_restart(fw_etcd_harness *h, int i) {
    if (!h || i < 0 || i >= h->n) return -1;
    if (h->m[i].pid > 0) return 0;
    /* Same data dir: etcd ignores the --initial-* flags and rejoins. */
    if (s_spawn(h, &h->m[i]) < 0) return -1;
    if (fw_etcd_harness_wait_healthy(h, i, S_HEALTHY_MS) < 0) {
        fprintf(stderr, "etcd_harness: restarted member %s is not healthy\n", h->m[i].name);
        s_print_log(&h->m[i]);
        return -1;
    }
    return 0;
}

bool fw_etcd_harness_running(fw_etcd_harness *h, int i) {
    if (!h || i < 0 || i >= h->n || h->m[i].pid <= 0) return false;
    if (waitpid(h->m[i].pid, NULL, WNOHANG) == h->m[i].pid) {
        h->m[i].pid = 0;
        return false;
    }
    return true;
}

/* POST /v3/maintenance/status to member i: its own id and the leader's. */
static int s_status(s_member *m, unsigned long long *self, unsigned long long *leader) {
    CURL *c = curl_easy_init();
    if (!c) return -1;
    char url[128], body[1024] = "";
    snprintf(url, sizeof url, "%s/v3/maintenance/status", m->client_url);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{}");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    /* Both ids are decimal strings: "member_id":"123", "leader":"456". */
    const char *a = strstr(body, "\"member_id\":\""), *b = strstr(body, "\"leader\":\"");
    if (cc != CURLE_OK || !a || !b) return -1;
    *self = strtoull(a + 13, NULL, 10);
    *leader = strtoull(b + 10, NULL, 10);
    return 0;
}

int fw_etcd_harness_leader(fw_etcd_harness *h) {
    unsigned long long ids[FW_ETCD_HARNESS_MAX] = {0}, leader = 0;
    for (int i = 0; i < h->n; i++) {
        unsigned long long self, l;
        if (h->m[i].pid > 0 && s_status(&h->m[i], &self, &l) == 0) {
            ids[i] = self;
            if (l) leader = l;
        }
    }
    for (int i = 0; i < h->n; i++)
        if (leader && ids[i] == leader) return i;
    return -1;
}

typedef struct {
    char *buf;
    size_t len, cap;
} s_out;

static size_t s_out_write(char *p, size_t sz, size_t nm, void *ud) {
    s_out *o = ud;
    size_t n = sz * nm, room = o->cap > o->len + 1 ? o->cap - o->len - 1 : 0;
    size_t k = n < room ? n : room;
    if (o->buf && k) {
        memcpy(o->buf + o->len, p, k);
        o->len += k;
        o->buf[o->len] = '\0';
    }
    return n;
}

int fw_etcd_harness_post(fw_etcd_harness *h, int i, const char *path, const char *json,
                         const char *token, char *out, size_t size) {
    if (!h || i < 0 || i >= h->n) return -1;
    CURL *c = curl_easy_init();
    if (!c) return -1;
    s_out o = {.buf = out, .cap = size};
    if (out && size) out[0] = '\0';
    char url[256], auth[512];
    snprintf(url, sizeof url, "%s%s", h->m[i].client_url, path);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: %s", token);
        hdr = curl_slist_append(hdr, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_out_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &o);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    long status = -1;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    return (int)status;
}

int fw_etcd_harness_enable_auth(fw_etcd_harness *h, const char *root_password) {
    char body[512], out[1024];
    snprintf(body, sizeof body, "{\"name\":\"root\",\"password\":\"%s\"}", root_password);
    const char *steps[][2] = {
        {"/v3/auth/user/add", body},
        {"/v3/auth/role/add", "{\"name\":\"root\"}"},
        {"/v3/auth/user/grant", "{\"user\":\"root\",\"role\":\"root\"}"},
        {"/v3/auth/enable", "{}"},
    };
    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
        int st = fw_etcd_harness_post(h, 0, steps[k][0], steps[k][1], NULL, out, sizeof out);
        if (st != 200) {
            fprintf(stderr, "etcd_harness: %s -> HTTP %d %s\n", steps[k][0], st, out);
            return -1;
        }
    }
    return 0;
}

fw_etcd *fw_etcd_harness_client(const fw_etcd_harness *h, int timeout_ms) {
    fw_etcd_opts o = {.endpoints = h->endpoints, .timeout_ms = timeout_ms};
    return fw_etcd_new(&o);
}
