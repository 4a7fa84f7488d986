-- examples/http.lua: an HTTP/1.1 server with keep-alive and pipelining.
--
-- Try it:
--   hotsock -l 127.0.0.1:8080 examples/http.lua
--   curl -i http://127.0.0.1:8080/                          # hello
--   curl --data-binary 'some bytes' http://127.0.0.1:8080/echo
--   echo chunked | curl -H 'Transfer-Encoding: chunked' --data-binary @- http://127.0.0.1:8080/echo
--   wrk -t1 -c50 -d5s http://127.0.0.1:8080/
--
-- Routes: GET|HEAD / (a greeting), POST /echo (the request body back, with
-- the request's Content-Type), GET /stream (a chunked response).
--
-- The host does the cutting: "line" framing reads the request line and the
-- header lines up to the empty line; then conn:framing switches to
-- {exact = n} for a Content-Length body, or follows the chunked coding
-- (size line, data, CRLF, trailers), and back to "line" for the next
-- request. Bytes already received are re-framed, so pipelined requests are
-- answered in order. A malformed request gets 400, a request line over
-- MAX_HEAD 414, a head over it 431, a body over MAX_BODY 413; each time the
-- connection is then closed. A single line over MAX_FRAME is cut off by the
-- host itself ("frame too large"), without an answer.
local hs = require "hotsock"
local http = require "hotsock.http"

local MAX_BODY = 1024 * 1024      -- request bodies up to 1 MiB
local PIECE = 16384               -- body frames; at most max_frame
local MAX_HEAD = 16384            -- request line and headers; over it 414 / 431
local MAX_FRAME = 65536           -- a longer line is cut off by the host, unanswered
local LINGER = 2000               -- ms to drain a client we refused

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

routes["/"] = {
  GET = function(conn, req)
    reply(conn, req, 200, { ["Content-Type"] = "text/plain" }, HELLO)
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

return {
  listen = "127.0.0.1:8080",
  framing = "line",
  max_frame = MAX_FRAME,                        -- a header line, or a body piece
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
        set_framing(conn, "line")
        return serve(conn, req, body)
      end
      return set_framing(conn, rd:framing())
    end

    local head = conn.head
    if not head then
      head = http.head_reader({ max_head = MAX_HEAD, max_request_line = MAX_HEAD })
      conn.head = head
    end
    local req, err, status = head:line(msg)
    if err then return refuse(conn, status or 400, err) end
    if not req then return end

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
}
