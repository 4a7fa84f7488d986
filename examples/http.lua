-- examples/http.lua: an HTTP/1.1 server with keep-alive and pipelining.
--
-- Try it:
--   hotsock -l 127.0.0.1:8080 examples/http.lua
--   curl -i http://127.0.0.1:8080/                          # hello
--   curl --data-binary 'some bytes' http://127.0.0.1:8080/echo
--   echo chunked | curl -H 'Transfer-Encoding: chunked' --data-binary @- http://127.0.0.1:8080/echo
--   wrk -t1 -c50 -d5s http://127.0.0.1:8080/
-- HTTPS (ALPN agrees on http/1.1, from the tls field below):
--   hotsock -l tls://127.0.0.1:8443 --tls-cert cert.pem --tls-key key.pem examples/http.lua
--   curl --cacert ca.pem https://localhost:8443/
--
-- Routes: GET|HEAD / (a greeting), POST /echo (the request body back, with
-- the request's Content-Type), GET /stream (a chunked response).
--
-- The host does the parsing: framing = "http" (built by http.framing) has
-- C cut the stream into requests and hand each over as one table (method,
-- target, path, query, version, headers with lower-case names, and the
-- whole body: Content-Length or chunked, de-chunked in C). Bytes already
-- received are framed in order, so pipelined requests are answered in
-- order. A request C refuses comes to on_frame_error with the reason: a
-- malformed request gets 400, a request line over MAX_LINE 414, a head
-- over MAX_HEAD 431, a body over MAX_BODY (max_frame) 413; each time the
-- connection is then closed. A head with "Expect: 100-continue" comes
-- first alone (req.continue): it gets "100 Continue", then the request.
local hs = require "hotsock"
local http = require "hotsock.http"

local MAX_BODY = 1024 * 1024      -- request bodies up to 1 MiB: max_frame
local MAX_LINE = 8192             -- the request line; over it 414
local MAX_HEAD = 16384            -- request line and headers; over it 431
local FRAMING = http.framing({ max_head = MAX_HEAD, max_line = MAX_LINE, continue = true })

local date_at, date_str = -1, ""
local function date()
  local t = os.time()
  if t ~= date_at then
    date_at, date_str = t, os.date("!%a, %d %b %Y %H:%M:%S GMT", t)
  end
  return date_str
end

local HELLO = "hello from hotsock\n"

local function reply(conn, req, status, headers, body)
  local keep = http.keep_alive(req)
  headers = headers or {}
  headers.Date = date()
  headers.Server = "hotsock"
  conn:send(http.response(status, headers, body, { keep_alive = keep, head = req.method == "HEAD" }))
  if not keep then conn:close() end
end

local routes = {}

-- The greeting is the same for everyone: its bytes are built once per
-- second (the Date header changes) for each of GET/HEAD and keep-alive/close.
local hello_at, hello = nil, {}

routes["/"] = {
  GET = function(conn, req)
    local keep, head, now = http.keep_alive(req), req.method == "HEAD", date()
    if now ~= hello_at then hello_at, hello = now, {} end
    local key = (head and "h" or "g") .. (keep and "k" or "c")
    local bytes = hello[key]
    if not bytes then
      bytes = http.response(200, { ["Content-Type"] = "text/plain", Date = now, Server = "hotsock" },
        HELLO, { keep_alive = keep, head = head })
      hello[key] = bytes
    end
    conn:send(bytes)
    if not keep then conn:close() end
  end,
}
routes["/"].HEAD = routes["/"].GET

routes["/echo"] = {
  POST = function(conn, req, body)
    local ctype = req.headers["content-type"] or "application/octet-stream"
    reply(conn, req, 200, { ["Content-Type"] = ctype }, body)
  end,
}
routes["/echo"].PUT = routes["/echo"].POST

routes["/stream"] = {
  GET = function(conn, req)
    local keep = http.keep_alive(req)
    conn:send(http.head(200, { ["Content-Type"] = "text/plain", Date = date(), Server = "hotsock" },
      { chunked = true, keep_alive = keep }))
    for i = 1, 5 do conn:send(http.chunk("line " .. i .. "\n")) end
    conn:send(http.last_chunk())
    if not keep then conn:close() end
  end,
}

local function serve(conn, req, body)
  local route = routes[req.path]
  if not route then
    return reply(conn, req, 404, { ["Content-Type"] = "text/plain" }, "not found\n")
  end
  local h = route[req.method]
  if not h then
    local allow = {}
    for m in pairs(route) do allow[#allow + 1] = m end
    table.sort(allow)
    return reply(conn, req, 405, { Allow = table.concat(allow, ", "), ["Content-Type"] = "text/plain" },
      "method not allowed\n")
  end
  return h(conn, req, body)
end

return {
  listen = "127.0.0.1:8080",
  tls = { alpn = { "http/1.1" } },              -- for TLS listeners (-l tls://...)
  framing = FRAMING,
  max_frame = MAX_BODY,                         -- a request body (and at most the head)
  max_inbuf = 4 * MAX_BODY,                     -- a chunked body on the wire, and more
  timeouts = { idle = 60000, frame = 10000 },   -- idle keep-alive; slow requests

  on_message = function(conn, req)
    if req.continue then return conn:send(http.CONTINUE) end -- the body follows
    return serve(conn, req, req.body)
  end,

  -- A request C refused: answer, and the host closes the connection once
  -- the answer is out (reading and dropping what the client still sends
  -- for a while, so that the answer is not lost to a reset).
  on_frame_error = function(conn, why)
    local status = http.refusal_status(why)
    hs.log.info(("refused with %d: %s"):format(status, why))
    conn:send(http.response(status, { ["Content-Type"] = "text/plain", Date = date(), Server = "hotsock" },
      why .. "\n", { keep_alive = false }))
  end,
}
