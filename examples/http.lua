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
-- The host does the cutting: {delimiter = "\r\n\r\n"} framing hands over a
-- whole request head (request line and headers) in one message; then
-- conn:framing switches to {exact = n} for a Content-Length body, or
-- follows the chunked coding (size line, data, CRLF, trailers), and back to
-- the head delimiter for the next request. Bytes already received are
-- re-framed, so pipelined requests are answered in order. A malformed
-- request gets 400, a request line over MAX_LINE 414, a head over MAX_HEAD
-- 431, a body over MAX_BODY 413; each time the connection is then closed.
-- Heads must end in CRLF CRLF, as every HTTP client sends them.
local hs = require "hotsock"
local http = require "hotsock.http"

local MAX_BODY = 1024 * 1024      -- request bodies up to 1 MiB
local PIECE = 16384               -- body frames; at most max_frame
local MAX_LINE = 8192             -- the request line; over it 414
local MAX_HEAD = 16384            -- request line and headers; over it 431
local MAX_FRAME = 65536           -- the host refuses longer frames (on_frame_error)
local LINGER = 2000               -- ms to drain a client we refused
local HEAD = { delimiter = "\r\n\r\n" }

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

-- Refuse: answer, send FIN, and read (and drop) what the client still
-- sends for a while, so the answer is not lost to a reset.
local function refuse(conn, status, why)
  hs.log.info(("refused with %d: %s"):format(status, why))
  conn.refused = true
  conn.body, conn.req, conn.parts = nil, nil, nil
  conn:send(http.response(status, { ["Content-Type"] = "text/plain", Date = date(), Server = "hotsock" },
    why .. "\n", { keep_alive = false }))
  conn:framing("raw")
  conn:shutdown()
  hs.after(LINGER, function()
    if not conn.closed then conn:close() end
  end)
end

local function set_framing(conn, f)
  if conn.fr ~= f then
    conn.fr = f
    conn:framing(f)
  end
end

-- The head's status when it is too large: 414 when the request line alone
-- is, else 431.
local function oversize(head)
  local eol = head:find("\n", 1, true)
  if (eol or #head + 1) > MAX_LINE then return 414, "request line too long" end
  return 431, "request head too large"
end

return {
  listen = "127.0.0.1:8080",
  tls = { alpn = { "http/1.1" } },              -- for TLS listeners (-l tls://...)
  framing = HEAD,
  max_frame = MAX_FRAME,                        -- a request head, or a body piece
  timeouts = { idle = 60000, frame = 10000 },   -- idle keep-alive; slow heads

  on_message = function(conn, msg)
    if conn.refused then return end
    local rd = conn.body
    if rd then
      local piece, err = rd:push(msg)
      if not piece then
        return refuse(conn, err == "body too large" and 413 or 400, err)
      end
      if piece ~= "" then conn.parts[#conn.parts + 1] = piece end
      if rd.done then
        local req, body = conn.req, table.concat(conn.parts)
        conn.body, conn.req, conn.parts = nil, nil, nil
        set_framing(conn, HEAD)
        return serve(conn, req, body)
      end
      return set_framing(conn, rd:framing())
    end

    if #msg > MAX_HEAD then return refuse(conn, oversize(msg)) end
    local req, err = http.parse_head(msg)
    if not req then
      if #msg > MAX_LINE and err ~= "malformed request line" then return refuse(conn, oversize(msg)) end
      return refuse(conn, err == "too many headers" and 431 or 400, err)
    end
    if #req.target > MAX_LINE then return refuse(conn, 414, "request line too long") end

    local kind, n = http.body_kind(req)
    if not kind then return refuse(conn, 400, n) end
    if kind == "none" then return serve(conn, req, "") end
    if kind == "length" and n > MAX_BODY then
      return refuse(conn, 413, "body too large")
    end
    if http.expects_continue(req) then conn:send(http.CONTINUE) end
    rd = kind == "length" and http.length_body(n, { piece = PIECE, max_body = MAX_BODY })
                           or http.chunked_body({ piece = PIECE, max_body = MAX_BODY })
    conn.req, conn.body, conn.parts = req, rd, {}
    set_framing(conn, rd:framing())
  end,

  -- A head (or chunk-size line) longer than max_frame: the host stops
  -- reading it and closes the connection after this answer.
  on_frame_error = function(conn, why)
    if conn.refused then return end
    conn.refused = true
    conn:send(http.response(conn.body and 400 or 431, { ["Content-Type"] = "text/plain", Date = date(), Server = "hotsock" },
      why .. "\n", { keep_alive = false }))
  end,
}
