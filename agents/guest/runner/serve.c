/* prewarm-serve: the HTTP listener of a Prewarm guest.
 *
 *   prewarm-serve PORT PROGRAM [ARG...]
 *
 * Listens on 0.0.0.0:PORT and runs PROGRAM once per connection, with the connection as its
 * stdin and stdout (as inetd or tcpsvd do); PROGRAM speaks HTTP. Connections that arrive
 * together wait in a deep accept queue instead of being dropped (a dropped SYN costs the client
 * a multi-second retransmit). Children are reaped by the kernel. Built statically into the
 * guest image by build-guest.sh. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: prewarm-serve PORT PROGRAM [ARG...]\n");
        return 2;
    }
    char *end = NULL;
    long port = strtol(argv[1], &end, 10);
    if (end == argv[1] || *end != '\0' || port < 1 || port > 65535) {
        fprintf(stderr, "prewarm-serve: bad port '%s'\n", argv[1]);
        return 2;
    }

    /* Children are reaped by the kernel; PROGRAM gets the default action back at exec. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sa.sa_flags = SA_NOCLDWAIT;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGCHLD, &sa, NULL) != 0) {
        perror("prewarm-serve: sigaction");
        return 1;
    }

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("prewarm-serve: socket");
        return 1;
    }
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons((unsigned short)port);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("prewarm-serve: bind");
        return 1;
    }
    if (listen(fd, 128) != 0) {
        perror("prewarm-serve: listen");
        return 1;
    }

    for (;;) {
        int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS)
                pause_ms(10);
            continue; /* EINTR, ECONNABORTED, ... */
        }
        /* Answers are written in a few pieces (headers, body): do not hold them back. */
        (void)setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pid_t pid = fork();
        if (pid == 0) {
            sa.sa_flags = 0;
            (void)sigaction(SIGCHLD, &sa, NULL);
            if (dup2(c, 0) < 0 || dup2(c, 1) < 0)
                _exit(127);
            execv(argv[2], argv + 2);
            fprintf(stderr, "prewarm-serve: cannot run %s: %s\n", argv[2], strerror(errno));
            _exit(127);
        }
        if (pid < 0)
            pause_ms(10);
        close(c);
    }
}
