/*
 * eventd_supervisor.c - start, watch and stop tracellm-eventd from httpd's
 * parent process, like mod_cgid does its daemon: fork it in post_config,
 * register it as an "other child" so the MPM tells us when it dies (and we
 * start it again), and tie it to pconf so a restart or stop ends it.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <ap_mpm.h>
#include <apr_strings.h>
#include <mod_unixd.h>
#include <unixd.h>

#include "eventd_supervisor.h"

APLOG_USE_MODULE(tracellm);

/* What a (re)start needs; lives in pconf, one per server generation. */
typedef struct {
    apr_pool_t *pool;
    server_rec *server;
    const char *argv[12];
    apr_proc_t proc;
} eventd_child;

static int start(eventd_child *child);

/* The socket the running generation's event process listens on; NULL
 * when it has none. Children inherit it with the fork. */
static const char *wake_socket;

static apr_status_t forget_wake_socket(void *unused)
{
    wake_socket = NULL;
    return APR_SUCCESS;
}

const char *tllm_eventd_check_listen(apr_pool_t *p, const char *arg)
{
    const char *colon = strrchr(arg, ':');
    const char *host;
    char *end;
    long port;

    if (!colon) {
        return "must be host:port";
    }
    host = apr_pstrndup(p, arg, colon - arg);
    port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 1 || port > 65535) {
        return "needs a port from 1 to 65535";
    }
    if (strncmp(host, "127.", 4) != 0 && strcmp(host, "[::1]") != 0
        && strcmp(host, "localhost") != 0) {
        return "must be a loopback address (127.x.x.x, [::1] or localhost)";
    }
    return NULL;
}

static int httpd_stopping(void)
{
    int state;
    /* If the MPM cannot say, assume stopping: never restart in a loop. */
    return ap_mpm_query(AP_MPMQ_MPM_STATE, &state) != APR_SUCCESS
           || state == AP_MPMQ_STOPPING;
}

/* Stop the process and reap it, so its port is free before a new
 * generation's process binds it. */
static void stop_and_reap(pid_t pid)
{
    int i, status;

    kill(pid, SIGTERM);
    for (i = 0; i < 300; i++) {
        if (waitpid(pid, &status, WNOHANG) != 0) {
            return;
        }
        apr_sleep(apr_time_from_msec(10));
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
}

static void maintenance(int reason, void *data, apr_wait_t status)
{
    eventd_child *child = data;

    switch (reason) {
    case APR_OC_REASON_DEATH:
    case APR_OC_REASON_LOST:
        apr_proc_other_child_unregister(child);
        if (!httpd_stopping()) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, child->server,
                         "TLLM0501: tracellm-eventd (pid %" APR_PID_T_FMT
                         ") exited with status %d; restarting it",
                         child->proc.pid, (int)status);
            start(child);
        }
        break;
    case APR_OC_REASON_RESTART:
        /* httpd restarts: pconf's cleanup (UNREGISTER) stops it. */
        apr_proc_other_child_unregister(child);
        break;
    case APR_OC_REASON_UNREGISTER:
        stop_and_reap(child->proc.pid);
        break;
    }
}

static int start(eventd_child *child)
{
    pid_t pid = fork();

    if (pid < 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, child->server,
                     "TLLM0502: cannot fork tracellm-eventd");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (pid == 0) {
        /* Run as httpd's User, like the children that write the db. */
        if (geteuid() == 0 && ap_unixd_setup_child() != 0) {
            _exit(1);
        }
        execv(child->argv[0], (char *const *)child->argv);
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, child->server,
                     "TLLM0503: cannot run %s", child->argv[0]);
        _exit(1);
    }
    child->proc.pid = pid;
    child->proc.in = child->proc.out = child->proc.err = NULL;
    apr_proc_other_child_register(&child->proc, maintenance, child, NULL,
                                  child->pool);
    return OK;
}

/* The socket's directory belongs to httpd's User: the event process binds
 * in it after dropping root. */
static int make_socket_dir(apr_pool_t *p, server_rec *s, const char *sock)
{
    char *dir = ap_make_dirstr_parent(p, sock);
    apr_size_t n = strlen(dir);

    if (n > 1 && dir[n - 1] == '/') {
        dir[n - 1] = '\0';
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s,
                     "TLLM0504: cannot create %s for TraceLLMEventSocket",
                     dir);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (geteuid() == 0
        && chown(dir, ap_unixd_config.user_id, ap_unixd_config.group_id)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s,
                     "TLLM0505: cannot give %s to User %s", dir,
                     ap_unixd_config.user_name);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return OK;
}

int tllm_eventd_start(apr_pool_t *pconf, server_rec *s,
                      tllm_eventd_conf *conf, const char *db_path)
{
    eventd_child *child;
    int rc, i = 0;

    if (!conf->socket) {
        conf->socket = ap_runtime_dir_relative(pconf, "tracellm/eventd.sock");
    }
    if (strlen(conf->socket) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "TLLM0506: "
                     "TraceLLMEventSocket %s is too long for a socket path",
                     conf->socket);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (access(conf->binary, X_OK) != 0) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s, "TLLM0507: "
                     "TraceLLMEventdBinary %s cannot be run", conf->binary);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    rc = make_socket_dir(pconf, s, conf->socket);
    if (rc != OK) {
        return rc;
    }
    child = apr_pcalloc(pconf, sizeof(*child));
    child->pool = pconf;
    child->server = s;
    child->argv[i++] = conf->binary;
    child->argv[i++] = "--db";
    child->argv[i++] = db_path;
    child->argv[i++] = "--listen";
    child->argv[i++] = conf->listen;
    child->argv[i++] = "--wake";
    child->argv[i++] = conf->socket;
    child->argv[i++] = "--queue";
    child->argv[i++] = conf->queue ? conf->queue : TLLM_EVENTD_DEFAULT_QUEUE;
    child->argv[i] = NULL;
    wake_socket = conf->socket;
    apr_pool_cleanup_register(pconf, NULL, forget_wake_socket,
                              apr_pool_cleanup_null);
    return start(child);
}

/* One unbound datagram socket per child process, shared by its threads
 * (sendto on a datagram socket is atomic). */
static int notify_fd = -1;

void tllm_eventd_notify(int64_t seq)
{
    struct sockaddr_un addr;
    char msg[32];
    int n;

    if (!wake_socket) {
        return;
    }
    if (notify_fd < 0) {
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        0);
        if (fd < 0) {
            return;
        }
        if (!__sync_bool_compare_and_swap(&notify_fd, -1, fd)) {
            close(fd);          /* another thread got there first */
        }
    }
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    apr_cpystrn(addr.sun_path, wake_socket, sizeof(addr.sun_path));
    n = apr_snprintf(msg, sizeof(msg), "%" APR_INT64_T_FMT, seq);
    /* EAGAIN or no listener: the poll picks the rows up. */
    (void)sendto(notify_fd, msg, n, 0, (struct sockaddr *)&addr,
                 sizeof(addr));
}
