/* console.c: `hotsock console ADDR [COMMAND...]`, a client of the admin
 * endpoint's console (admin.c). With a command it sends that one line,
 * prints the answer (up to the empty line that ends every answer) and
 * exits; without, it passes lines from stdin and prints whatever comes
 * back (trace output included) until either side closes. Plain blocking
 * sockets and poll(2): no loop, no Lua. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "hotsock.h"

static int connect_to(const char *addr) {
  if (addr[0] == '/' || strncmp(addr, "unix:", 5) == 0) {
    const char *path = addr[0] == '/' ? addr : addr + 5;
    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof un.sun_path) {
      fprintf(stderr, "hotsock console: path too long: %s\n", path);
      return -1;
    }
    memcpy(un.sun_path, path, strlen(path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&un, sizeof un) != 0) {
      fprintf(stderr, "hotsock console: cannot connect to %s: %s\n", path, strerror(errno));
      if (fd >= 0) close(fd);
      return -1;
    }
    return fd;
  }
  char host[256] = "127.0.0.1", port[16];
  const char *colon = strrchr(addr, ':');
  if (colon) {
    size_t hl = (size_t)(colon - addr);
    const char *h = addr;
    if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') h++, hl -= 2;
    if (hl >= sizeof host) hl = sizeof host - 1;
    memcpy(host, h, hl);
    host[hl] = 0;
    snprintf(port, sizeof port, "%s", colon + 1);
  } else {
    snprintf(port, sizeof port, "%s", addr);
  }
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  int r = getaddrinfo(host, port, &hints, &res);
  if (r != 0) {
    fprintf(stderr, "hotsock console: %s: %s\n", addr, gai_strerror(r));
    return -1;
  }
  int fd = -1;
  for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      r = errno;
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0) fprintf(stderr, "hotsock console: cannot connect to %s: %s\n", addr, strerror(r));
  return fd;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* One command: send it, copy the answer to stdout up to its empty line. */
static int one_command(int fd, const char *cmd) {
  if (write_all(fd, cmd, strlen(cmd)) != 0 || write_all(fd, "\n", 1) != 0) return 1;
  char buf[4096];
  int at_line_start = 1;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 0; /* closed (quit) */
    for (ssize_t i = 0; i < n; i++) {
      if (buf[i] == '\n' && at_line_start) {
        fwrite(buf, 1, (size_t)i, stdout);
        return 0;
      }
      at_line_start = buf[i] == '\n';
    }
    fwrite(buf, 1, (size_t)n, stdout);
  }
}

int hs_console_main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    fprintf(argc < 2 ? stderr : stdout,
            "usage: hotsock console ADDR [COMMAND...]\n"
            "\n"
            "Talk to the admin console of a server started with --admin ADDR\n"
            "(unix:/path, /path, PORT or 127.0.0.1:PORT). With a COMMAND, run it\n"
            "and print the answer; without, read commands from stdin (try help).\n");
    return argc < 2 ? 2 : 0;
  }
  int fd = connect_to(argv[1]);
  if (fd < 0) return 1;
  if (argc > 2) {
    char cmd[4096];
    size_t n = 0;
    for (int i = 2; i < argc; i++) {
      int w = snprintf(cmd + n, sizeof cmd - n, "%s%s", i > 2 ? " " : "", argv[i]);
      if (w < 0 || (size_t)w >= sizeof cmd - n) {
        fprintf(stderr, "hotsock console: command too long\n");
        close(fd);
        return 2;
      }
      n += (size_t)w;
    }
    int r = one_command(fd, cmd);
    close(fd);
    return r;
  }
  struct pollfd p[2] = {{STDIN_FILENO, POLLIN, 0}, {fd, POLLIN, 0}};
  char buf[4096];
  for (;;) {
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[1].revents) {
      ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0) break;
      if (write_all(STDOUT_FILENO, buf, (size_t)n) != 0) break;
    }
    if (p[0].fd >= 0 && p[0].revents) {
      ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
      if (n <= 0) {
        /* End of input: let the server finish its answers, then go. */
        shutdown(fd, SHUT_WR);
        p[0].fd = -1;
      } else if (write_all(fd, buf, (size_t)n) != 0) {
        break;
      }
    }
  }
  close(fd);
  return 0;
}
