/* uv_echo: the baseline for bench/run.sh. A plain libuv TCP echo server
 * written the way the libuv guide writes one: every read gets a fresh
 * malloc'd buffer of the suggested size, every read is echoed at once with
 * its own uv_write request, and both are freed in the write callback. No
 * framing and no scripting: whatever one read returned goes straight back.
 *
 *   uv_echo [-H ADDR] [-p PORT]      (default 127.0.0.1:7001) */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct echo_write {
  uv_write_t req;
  uv_buf_t buf;
} echo_write_t;

static void on_close(uv_handle_t *h) { free(h); }

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  buf->base = malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

static void on_write(uv_write_t *req, int status) {
  echo_write_t *w = (echo_write_t *)req;
  if (status < 0 && !uv_is_closing((uv_handle_t *)req->handle))
    uv_close((uv_handle_t *)req->handle, on_close);
  free(w->buf.base);
  free(w);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  if (nread > 0) {
    echo_write_t *w = malloc(sizeof *w);
    if (w) {
      w->buf = uv_buf_init(buf->base, (unsigned)nread);
      if (uv_write(&w->req, s, &w->buf, 1, on_write) == 0) return;
      free(w);
    }
    free(buf->base);
    uv_close((uv_handle_t *)s, on_close);
    return;
  }
  free(buf->base);
  if (nread < 0 && !uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, on_close);
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) {
    fprintf(stderr, "uv_echo: accept: %s\n", uv_strerror(status));
    return;
  }
  uv_tcp_t *c = malloc(sizeof *c);
  if (!c) return;
  uv_tcp_init(server->loop, c);
  if (uv_accept(server, (uv_stream_t *)c) != 0) {
    uv_close((uv_handle_t *)c, on_close);
    return;
  }
  uv_tcp_nodelay(c, 1);
  uv_read_start((uv_stream_t *)c, on_alloc, on_read);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: uv_echo [-H ADDR] [-p PORT]\n"
          "A plain libuv echo server (malloc per read, one uv_write per read),\n"
          "the baseline bench/run.sh measures hotsock against.\n"
          "  -H ADDR   IPv4 address to listen on (default 127.0.0.1)\n"
          "  -p PORT   port (default 7001)\n");
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1";
  int port = 7001;
  for (int i = 1; i < argc; i++) {
    if ((strcmp(argv[i], "-H") == 0 || strcmp(argv[i], "-p") == 0) && i + 1 < argc) {
      if (argv[i][1] == 'H') host = argv[++i];
      else port = atoi(argv[++i]);
    } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    } else {
      usage(stderr);
      return 2;
    }
  }
  uv_loop_t *loop = uv_default_loop();
  uv_tcp_t server;
  struct sockaddr_in sa;
  int r = uv_ip4_addr(host, port, &sa);
  if (r == 0) r = uv_tcp_init(loop, &server);
  if (r == 0) r = uv_tcp_bind(&server, (const struct sockaddr *)&sa, 0);
  if (r == 0) r = uv_listen((uv_stream_t *)&server, SOMAXCONN, on_connection);
  if (r != 0) {
    fprintf(stderr, "uv_echo: %s:%d: %s\n", host, port, uv_strerror(r));
    return 1;
  }
  fprintf(stderr, "listening on %s:%d\n", host, port);
  return uv_run(loop, UV_RUN_DEFAULT);
}
