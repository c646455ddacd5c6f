/*
 * eventd.c - tracellm-eventd, the live-event process of mod_tracellm.
 *
 *   tracellm-eventd --db PATH --listen 127.0.0.1:PORT --wake SOCKETPATH
 *                   [--poll-ms 250] [--queue 1024] [--max-message 65536]
 *
 * httpd starts it as an "other child" and proxies /ws to it. It serves
 * API.md's "WS /ws" from the database, which is the event log: it reads
 * traces with seq beyond its cursor when the module's datagram on the
 * wake socket says rows were committed, and every --poll-ms regardless
 * (a missed datagram, or a writer on another node). It exits on SIGTERM
 * or SIGINT, and when httpd (its parent) is gone: it is never orphaned.
 *
 * This file is the process: options, the store, the sockets, the loop.
 *
 * Where API.md is silent, this is what the process does:
 * - Any path is served; the query string carries since, project_id and
 *   environment. An empty value counts as absent; if a name is repeated
 *   the last one counts; other names are ignored.
 * - since that is not a non-negative decimal integer (63 bits): after
 *   system.connected, {"type":"system.error","detail":"since must be a
 *   non-negative integer"}, then close 1008 "invalid query".
 * - Without since a client is live from the newest event the process has
 *   read; since beyond the log waits for seqs above it.
 * - A malformed message (not JSON, not an object, no string "type", a
 *   type other than "ping", a binary frame) gets system.error and the
 *   connection stays open. A ping without ts is answered with
 *   "timestamp":null; ts is echoed as the very text the client sent.
 * - A message over --max-message bytes: close 1009 "message too big" as
 *   soon as a frame header announces it. Invalid UTF-8: close 1007 (lws).
 * - More than --queue messages waiting for a client: close 1008 "client
 *   too slow"; the close frame follows what is already in the socket, and
 *   a client that still does not read is dropped after 10 s. A burst of
 *   more than --queue events at once does this to every live client
 *   (keep --queue above the largest ingest batch, 1000).
 * - SIGTERM / SIGINT / the parent gone: every client is closed with 1001
 *   "server shutting down" (up to 1 s), the wake socket is removed and the
 *   process exits 0. Startup failures exit 1, usage errors 2.
 * - A plain HTTP request gets 400.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <apr_general.h>
#include <apr_strings.h>

#include "eventd.h"

/* File descriptors wanted: 500 clients and then some. lws sizes its fd
 * tables by the limit, so a huge one is lowered to this too. */
#define FD_WANT 65536

/* How long clients get to receive their close frame at shutdown. */
#define SHUTDOWN_GRACE_US (1000 * LWS_US_PER_MS)

static volatile sig_atomic_t stop_signal;

void tllm_evd_log(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n = snprintf(line, sizeof(line), "tracellm-eventd: ");

    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    /* One line, written at once: httpd's error_log is shared. */
    line[strcspn(line, "\r\n")] = '\0';
    n = strlen(line);
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, n) < 0) {
        /* nowhere left to say it */
    }
}

static void lws_log(int level, const char *line)
{
    tllm_evd_log("lws: %s", line);
}

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* ---- options ------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr,
            "usage: tracellm-eventd --db PATH --listen 127.0.0.1:PORT "
            "--wake SOCKETPATH\n"
            "                       [--poll-ms 250] [--queue 1024] "
            "[--max-message 65536]\n");
    exit(2);
}

static int parse_number(const char *name, const char *s, long min, long max,
                        long *out)
{
    char *end;

    errno = 0;
    *out = strtol(s, &end, 10);
    if (errno || end == s || *end || *out < min || *out > max) {
        tllm_evd_log("--%s must be a whole number from %ld to %ld", name,
                     min, max);
        return 0;
    }
    return 1;
}

/* host:port, where host is a loopback address: 127.x.x.x, [::1] or
 * localhost. Nothing but httpd's proxy should reach this process. */
static int parse_listen(apr_pool_t *p, tllm_evd *evd, const char *arg)
{
    const char *colon = strrchr(arg, ':');
    char *host;
    long port;
    unsigned char addr[16];

    if (!colon || !parse_number("listen port", colon + 1, 1, 65535, &port)) {
        tllm_evd_log("--listen must be host:port, not %s", arg);
        return 0;
    }
    host = apr_pstrndup(p, arg, colon - arg);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        host = apr_pstrndup(p, host + 1, strlen(host) - 2);
    }
    if (strcmp(host, "localhost") == 0) {
        host = "127.0.0.1";
    }
    if (!(inet_pton(AF_INET, host, addr) == 1 && addr[0] == 127)
        && strcmp(host, "::1") != 0) {
        tllm_evd_log("--listen %s is not a loopback address", arg);
        return 0;
    }
    evd->host = host;
    evd->port = (int)port;
    return 1;
}

static int parse_args(apr_pool_t *p, tllm_evd *evd, int argc, char **argv)
{
    static const struct option opts[] = {
        { "db", required_argument, NULL, 'd' },
        { "listen", required_argument, NULL, 'l' },
        { "wake", required_argument, NULL, 'w' },
        { "poll-ms", required_argument, NULL, 'p' },
        { "queue", required_argument, NULL, 'q' },
        { "max-message", required_argument, NULL, 'm' },
        { NULL, 0, NULL, 0 }
    };
    const char *listen = NULL;
    long v;
    int o, ok = 1;

    evd->poll_ms = 250;
    evd->queue_max = 1024;
    evd->max_message = 65536;
    opterr = 0;                 /* usage() says it, with our prefix */
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'd': evd->db_path = optarg; break;
        case 'l': listen = optarg; break;
        case 'w': evd->wake_path = optarg; break;
        case 'p':
            ok = ok && parse_number("poll-ms", optarg, 1, 60000, &v);
            evd->poll_ms = (int)v;
            break;
        case 'q':
            ok = ok && parse_number("queue", optarg, 1, 1000000, &v);
            evd->queue_max = (int)v;
            break;
        case 'm':
            ok = ok && parse_number("max-message", optarg, 64, 1L << 30, &v);
            evd->max_message = (size_t)v;
            break;
        default:
            usage();
        }
    }
    if (optind < argc || !evd->db_path || !listen || !evd->wake_path) {
        usage();
    }
    if (strlen(evd->wake_path)
        >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        tllm_evd_log("--wake %s is too long for a socket path",
                     evd->wake_path);
        return 0;
    }
    return ok && parse_listen(p, evd, listen);
}

/* ---- resources ---------------------------------------------------------- */

static apr_status_t close_sqlite(void *data)
{
    sqlite3_close_v2(data);
    return APR_SUCCESS;
}

/* Open and migrate the database; the live cursor starts at its end. */
static int open_store(tllm_evd *evd)
{
    sqlite3 *sq = NULL;
    int rc = sqlite3_open_v2(evd->db_path, &sq,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                             NULL);

    if (rc != SQLITE_OK) {
        tllm_evd_log("cannot open %s: %s", evd->db_path,
                     sq ? sqlite3_errmsg(sq) : sqlite3_errstr(rc));
        sqlite3_close_v2(sq);
        return 0;
    }
    /* Registered before tllm_db_attach's cleanup, so it runs after it:
     * the cached statements are finalized before the connection closes. */
    apr_pool_cleanup_register(evd->pool, sq, close_sqlite,
                              apr_pool_cleanup_null);
    evd->db = tllm_db_attach(evd->pool, sq);
    if (!evd->db) {
        tllm_evd_log("cannot set up %s: %s", evd->db_path,
                     sqlite3_errmsg(sq));
        return 0;
    }
    if (tllm_store_migrate(evd->db) != TLLM_OK
        || tllm_store_last_seq(evd->db, &evd->cursor) != TLLM_OK) {
        tllm_evd_log("cannot prepare %s: %s", evd->db_path,
                     tllm_db_errmsg(evd->db));
        return 0;
    }
    return 1;
}

/* Bind the wake socket, owner-only. A leftover socket from a previous
 * run is removed; anything else at the path is left alone. */
static int open_wake(tllm_evd *evd)
{
    struct sockaddr_un sa;
    struct stat st;
    mode_t old;
    int fd, rc;

    if (lstat(evd->wake_path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            tllm_evd_log("--wake %s exists and is not a socket",
                         evd->wake_path);
            return 0;
        }
        unlink(evd->wake_path);
    }
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        tllm_evd_log("cannot create the wake socket: %s", strerror(errno));
        return 0;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, evd->wake_path);
    old = umask(0177);
    rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc != 0 || chmod(evd->wake_path, 0600) != 0) {
        tllm_evd_log("cannot bind the wake socket %s: %s", evd->wake_path,
                     strerror(errno));
        close(fd);
        return 0;
    }
    evd->wake_fd = fd;
    evd->wake_bound = 1;
    return 1;
}

/* Enough descriptors for hundreds of clients, whatever httpd was given;
 * not millions, which lws would size its tables for. */
static void set_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return;
    }
    if (rl.rlim_cur != FD_WANT && (rl.rlim_cur < FD_WANT
                                   ? rl.rlim_max > rl.rlim_cur
                                   : 1)) {
        rl.rlim_cur = rl.rlim_max < FD_WANT ? rl.rlim_max : FD_WANT;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < 600) {
        tllm_evd_log("only %ld file descriptors allowed: fewer than 500 "
                     "clients can connect", (long)rl.rlim_cur);
    }
}

static void on_poll(lws_sorted_usec_list_t *sul)
{
    tllm_evd *evd = lws_container_of(sul, tllm_evd, poll_sul);

    if (getppid() != evd->parent && !evd->stopping) {
        tllm_evd_log("httpd (pid %ld) is gone: exiting", (long)evd->parent);
        tllm_evd_close_all(evd);
    }
    if (!evd->stopping) {
        tllm_evd_read_new(evd);
    }
    lws_sul_schedule(evd->ctx, 0, &evd->poll_sul, on_poll,
                     (lws_usec_t)evd->poll_ms * LWS_US_PER_MS);
}

static int start_lws(tllm_evd *evd)
{
    struct lws_context_creation_info info;
    uint64_t opts = LWS_SERVER_OPTION_EXPLICIT_VHOSTS
                    | LWS_SERVER_OPTION_VALIDATE_UTF8
                    | LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;

    if (strchr(evd->host, ':') == NULL) {
        opts |= LWS_SERVER_OPTION_DISABLE_IPV6;
    }
    memset(&info, 0, sizeof(info));
    info.options = opts;
    info.user = evd;
    info.max_http_header_data = 4096;
    /* Handshakes in progress at once; more wait in the listen backlog.
     * 500 clients reconnecting together should not queue for long. */
    info.max_http_header_pool = 64;
    evd->ctx = lws_create_context(&info);
    if (!evd->ctx) {
        tllm_evd_log("cannot create the WebSocket context");
        return 0;
    }
    memset(&info, 0, sizeof(info));
    info.options = opts;
    info.vhost_name = "tracellm";
    info.iface = evd->host;
    info.port = evd->port;
    info.protocols = tllm_evd_protocols;
    evd->vhost = lws_create_vhost(evd->ctx, &info);
    if (!evd->vhost) {
        tllm_evd_log("cannot listen on %s port %d", evd->host, evd->port);
        return 0;
    }
    return 1;
}

/* The wake socket joins lws's poll loop as a raw descriptor; the poll
 * timer starts. */
static int watch_wake(tllm_evd *evd)
{
    lws_sock_file_fd_type fd;

    fd.filefd = evd->wake_fd;
    if (!lws_adopt_descriptor_vhost(evd->vhost, LWS_ADOPT_RAW_FILE_DESC, fd,
                                    TLLM_EVD_WAKE_PROTOCOL, NULL)) {
        tllm_evd_log("cannot watch the wake socket");
        return 0;
    }
    evd->wake_adopted = 1;
    lws_sul_schedule(evd->ctx, 0, &evd->poll_sul, on_poll,
                     (lws_usec_t)evd->poll_ms * LWS_US_PER_MS);
    return 1;
}

static void handle_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;      /* no SA_RESTART: poll() returns */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* httpd signals its process group on restarts (SIGHUP, and SIGUSR1
     * for graceful ones, whose default would kill us): the module stops
     * and starts this process itself. */
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
}

/* Serve until a signal or the parent's death, then give clients a moment
 * to get their close frames. */
static void serve(tllm_evd *evd)
{
    lws_usec_t deadline;

    while (!stop_signal && !evd->stopping) {
        if (lws_service(evd->ctx, 0) < 0) {
            tllm_evd_log("the event loop failed");
            break;
        }
    }
    tllm_evd_close_all(evd);
    deadline = lws_now_usecs() + SHUTDOWN_GRACE_US;
    while (evd->nclients > 0 && lws_now_usecs() < deadline) {
        if (lws_service(evd->ctx, 0) < 0) {
            break;
        }
    }
}

int main(int argc, char **argv)
{
    apr_pool_t *pool;
    tllm_evd evd;
    int ok;

    if (apr_initialize() != APR_SUCCESS
        || apr_pool_create(&pool, NULL) != APR_SUCCESS) {
        tllm_evd_log("cannot initialize APR");
        return 1;
    }
    memset(&evd, 0, sizeof(evd));
    evd.pool = pool;
    evd.wake_fd = -1;
    evd.parent = getppid();
#ifdef __linux__
    /* Told at once when httpd dies; the poll checks getppid() too. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
    handle_signals();
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log);
    ok = parse_args(pool, &evd, argc, argv)
         && apr_pool_create(&evd.scratch, pool) == APR_SUCCESS;
    if (ok) {
        set_fd_limit();
    }
    /* The port first: a second copy fails there, before it could take
     * the running one's wake socket away. */
    ok = ok && open_store(&evd) && start_lws(&evd) && open_wake(&evd)
         && watch_wake(&evd);
    if (ok) {
        tllm_evd_log("listening on %s port %d from seq %" PRId64
                     "; wake socket %s", evd.host, evd.port, evd.cursor,
                     evd.wake_path);
        serve(&evd);
        tllm_evd_log("stopped");
    }
    if (evd.ctx) {
        lws_context_destroy(evd.ctx);
    }
    if (!evd.wake_adopted && evd.wake_fd >= 0) {
        close(evd.wake_fd);
    }
    if (evd.wake_bound) {
        unlink(evd.wake_path);
    }
    apr_pool_destroy(pool);
    apr_terminate();
    return ok ? 0 : 1;
}
