-- lua/hotsock/http.lua on its own: request heads, body kinds, keep-alive,
-- body readers (framing-driven and over a raw stream, byte by byte),
-- responses and the chunked coding.
package.path = "lua/?.lua;" .. package.path
local http = require "hotsock.http"

-- Drive a body reader the way a server does with conn:framing: cut `s`
-- according to rd:framing() ("line" strips LF and a CR before it).
local function drive(rd, s)
  local pieces, pos = {}, 1
  while not rd.done do
    local f, msg = rd:framing(), nil
    if f == "line" then
      local e = s:find("\n", pos, true)
      if not e then return nil, "incomplete", pieces end
      msg = s:sub(pos, e - 1):gsub("\r$", "")
      pos = e + 1
    else
      assert.is_true(f.exact > 0)
      if #s - pos + 1 < f.exact then return nil, "incomplete", pieces end
      msg = s:sub(pos, pos + f.exact - 1)
      pos = pos + f.exact
    end
    local piece, err = rd:push(msg)
    if not piece then return nil, err, pieces end
    pieces[#pieces + 1] = piece
  end
  return table.concat(pieces), s:sub(pos)
end

-- Feed `s` to rd:feed in pieces of `step` bytes.
local function feed(rd, s, step)
  local out = {}
  for i = 1, #s, step do
    local pieces, err = rd:feed(s:sub(i, i + step - 1))
    if not pieces then return nil, err end
    for _, p in ipairs(pieces) do out[#out + 1] = p end
  end
  return table.concat(out), rd:rest()
end

describe("hotsock.http request heads", function()
  it("parses a request line", function()
    assert.are.same({ "GET", "/a?b=1", 1, 1 }, { http.parse_request_line("GET /a?b=1 HTTP/1.1") })
    assert.are.same({ "POST", "*", 1, 0 }, { http.parse_request_line("POST * HTTP/1.0\r") })
  end)

  it("rejects malformed request lines", function()
    for _, l in ipairs({
      "", "GET", "GET /", "GET / HTTP/1.1 extra", "GET  / HTTP/1.1", "GET / http/1.1",
      "GET / HTTP/1", "G(T / HTTP/1.1", "GET / HTTP/2.0", "GET /\1 HTTP/1.1",
    }) do
      local m, err = http.parse_request_line(l)
      assert.is_nil(m, l)
      assert.is_string(err)
    end
  end)

  it("parses a whole head: case-insensitive names, OWS trimmed, repeats joined", function()
    local req = assert(http.parse_head(
      "GET /p/q?x=1&y=2 HTTP/1.1\r\nHost: a\r\nX-Y:   v  \r\nAccept: a\r\naccept: b\r\nEmpty:\r\n\r\n"))
    assert.are.equal("GET", req.method)
    assert.are.equal("/p/q", req.path)
    assert.are.equal("x=1&y=2", req.query)
    assert.are.equal("1.1", req.version)
    assert.are.equal("a", req.headers.host)
    assert.are.equal("v", req.headers["x-y"])
    assert.are.equal("a, b", req.headers.accept)
    assert.are.equal("", req.headers.empty)
    assert.are.same({ "X-Y", "v" }, req.header_list[2])
    -- LF-only lines and no final empty line
    req = assert(http.parse_head("HEAD / HTTP/1.0\nA: 1"))
    assert.are.equal("1", req.headers.a)
    assert.is_nil(req.query)
  end)

  it("rejects malformed heads", function()
    for _, h in ipairs({
      "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
      "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
      "GET / HTTP/1.1\r\nName : x\r\n\r\n",
      "GET / HTTP/1.1\r\n: x\r\n\r\n",
      "GET / HTTP/1.1\r\nA: 1\r\n  folded\r\n\r\n",
      "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
      "BAD\r\n\r\n",
    }) do
      local req, err = http.parse_head(h)
      assert.is_nil(req, h)
      assert.is_string(err)
    end
  end)

  it("reads a head line by line, and is ready for the next one", function()
    local r = http.head_reader()
    assert.is_nil(r:line(""))        -- a stray empty line before a request
    assert.is_nil(r:line("POST /x HTTP/1.1"))
    assert.is_nil(r:line("Content-Length: 3"))
    local req = r:line("")
    assert.are.equal("POST", req.method)
    assert.are.equal("3", req.headers["content-length"])
    assert.is_nil(r:line("GET /y HTTP/1.1"))
    assert.are.equal("/y", r:line("").path)
  end)

  it("reports a malformed line, too many headers and a head too large", function()
    local r = http.head_reader()
    local req, err = r:line("GET / HTTP/9.9")
    assert.is_nil(req) assert.is_string(err)
    r:line("GET / HTTP/1.1")
    req, err = r:line("nonsense")
    assert.is_nil(req) assert.matches("malformed header", err)
    r = http.head_reader({ max_headers = 3 })
    r:line("GET / HTTP/1.1")
    for i = 1, 3 do assert.is_nil(select(2, r:line("H" .. i .. ": v"))) end
    req, err = r:line("H4: v")
    assert.matches("too many headers", err)
    r = http.head_reader({ max_head = 100 })
    r:line("GET / HTTP/1.1")
    r:line("A: " .. ("x"):rep(60))
    local status
    req, err, status = r:line("B: " .. ("x"):rep(60))
    assert.matches("too large", err)
    assert.are.equal(431, status)
    r = http.head_reader({ max_request_line = 50 })
    req, err, status = r:line("GET /" .. ("x"):rep(50) .. " HTTP/1.1")
    assert.matches("too long", err)
    assert.are.equal(414, status)
    assert.are.equal(400, select(3, r:line("GET /")))
  end)
end)

describe("hotsock.http body kind and keep-alive", function()
  local function req(head) return assert(http.parse_head(head)) end

  it("tells none, length and chunked apart", function()
    assert.are.equal("none", http.body_kind(req("GET / HTTP/1.1\r\n\r\n")))
    assert.are.equal("none", http.body_kind(req("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")))
    assert.are.same({ "length", 12 }, { http.body_kind(req("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n")) })
    assert.are.equal("chunked", http.body_kind(req("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n")))
  end)

  it("rejects ambiguous or bad framing headers", function()
    for _, h in ipairs({
      "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
      "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    }) do
      local kind, err = http.body_kind(req(h))
      assert.is_nil(kind, h)
      assert.is_string(err)
    end
  end)

  it("decides keep-alive by HTTP/1.0 and 1.1 rules", function()
    assert.is_true(http.keep_alive(req("GET / HTTP/1.1\r\n\r\n")))
    assert.is_false(http.keep_alive(req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")))
    assert.is_false(http.keep_alive(req("GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n")))
    assert.is_false(http.keep_alive(req("GET / HTTP/1.0\r\n\r\n")))
    assert.is_true(http.keep_alive(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")))
    assert.is_true(http.expects_continue(req("POST / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n")))
    assert.is_false(http.expects_continue(req("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")))
  end)
end)

describe("hotsock.http body readers", function()
  local body = ("0123456789abcdef"):rep(3000) -- 48000 bytes
  local chunked = "5;ext=1\r\nhello\r\n" ..
                  ("%x"):format(#body) .. "\r\n" .. body .. "\r\n" ..
                  "1\r\n!\r\n" ..
                  "0\r\nTrailer: x\r\n\r\n"
  local want = "hello" .. body .. "!"

  it("reads a Content-Length body in frames no larger than a piece", function()
    local rd = http.length_body(#body, { piece = 4096 })
    local biggest = 0
    local pieces = {}
    while not rd.done do
      local n = rd:framing().exact
      biggest = math.max(biggest, n)
      local start = #table.concat(pieces) + 1
      pieces[#pieces + 1] = assert(rd:push(body:sub(start, start + n - 1)))
    end
    assert.are.equal(body, table.concat(pieces))
    assert.are.equal(4096, biggest)
    assert.are.equal("line", rd:framing())
  end)

  it("decodes a chunked body with framing switches", function()
    local got, rest = drive(http.chunked_body({ piece = 4096 }), chunked .. "GET / HTTP/1.1\r\n")
    assert.are.equal(want, got)
    assert.are.equal("GET / HTTP/1.1\r\n", rest)
  end)

  it("decodes the same chunked body over a raw stream, byte by byte and in pieces", function()
    for _, step in ipairs({ 1, 3, 1000, #chunked + 5 }) do
      local rd = http.chunked_body()
      local got, rest = feed(rd, chunked .. "NEXT", step)
      assert.are.equal(want, got, "step " .. step)
      assert.is_true(rd.done)
      assert.are.same({ "Trailer: x" }, rd.trailers)
      assert.are.equal("NEXT", rest)
    end
    local rd = http.length_body(10)
    local got, rest = feed(rd, "0123456789extra", 1)
    assert.are.equal("0123456789", got)
    assert.are.equal("extra", rest)
  end)

  it("accepts LF-only ends of size and trailer lines", function()
    local got = feed(http.chunked_body(), "3\nabc\r\n0\nT: 1\n\n", 1)
    assert.are.equal("abc", got)
  end)

  it("rejects malformed chunked bodies", function()
    for _, s in ipairs({
      "x\r\nabc\r\n0\r\n\r\n",         -- not hex
      "3\r\nabcd\r\n0\r\n\r\n",        -- data longer than the size
      "3 junk\r\nabc\r\n0\r\n\r\n",    -- junk after the size
      "-3\r\nabc\r\n0\r\n\r\n",
      "fffffffffffffffff\r\n",         -- absurd size
    }) do
      local got, err = feed(http.chunked_body(), s, 1)
      assert.is_nil(got, s)
      assert.is_string(err)
      local _, err2 = drive(http.chunked_body(), s)
      assert.is_string(err2)
      assert.are_not.equal("incomplete", err2, s)
    end
  end)

  it("enforces max_body for both kinds", function()
    local rd = http.length_body(101, { max_body = 100 })
    assert.are.equal("body too large", select(2, rd:push("x")))
    local _, err = feed(http.chunked_body({ max_body = 100 }), "40\r\n" .. ("x"):rep(64) .. "\r\n40\r\n", 1)
    assert.are.equal("body too large", err)
    -- within the limit exactly
    local got = feed(http.chunked_body({ max_body = 128 }),
      "40\r\n" .. ("x"):rep(64) .. "\r\n40\r\n" .. ("y"):rep(64) .. "\r\n0\r\n\r\n", 7)
    assert.are.equal(128, #got)
  end)
end)

describe("hotsock.http responses", function()
  it("builds a response with Content-Length and Connection", function()
    local r = http.response(200, { ["Content-Type"] = "text/plain" }, "hi\n", { keep_alive = true })
    assert.are.equal("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n" ..
                     "Connection: keep-alive\r\n\r\nhi\n", r)
    r = http.response(404, nil, "", { keep_alive = false })
    assert.are.equal("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", r)
  end)

  it("answers HEAD with the length and no body; 204 and 304 get no length", function()
    local r = http.response(200, nil, "hello", { head = true })
    assert.are.equal("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", r)
    assert.are.equal("HTTP/1.1 204 No Content\r\n\r\n", http.response(204))
  end)

  it("keeps header order for a list, repeats list values, refuses CR/LF", function()
    local h = http.head(200, { { "B", "1" }, { "A", "2" }, { "B", "3" } })
    assert.are.equal("HTTP/1.1 200 OK\r\nB: 1\r\nA: 2\r\nB: 3\r\n\r\n", h)
    h = http.head(200, { ["Set-Cookie"] = { "a=1", "b=2" } })
    assert.are.equal("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n", h)
    assert.has_error(function() http.head(200, { X = "a\r\nInjected: 1" }) end)
    -- a refused call leaves nothing behind for the next one
    assert.has_error(function() http.head(200, { A = "1", B = "2", C = "x\ny", D = "4" }) end)
    assert.are.equal("HTTP/1.1 200 OK\r\nE: 5\r\nF: 6\r\n\r\n", http.head(200, { F = "6", E = "5" }))
    assert.matches("^HTTP/1.1 599 Custom\r\n", http.head(599, nil, { reason = "Custom" }))
  end)

  it("encodes chunks that the chunked reader reads back", function()
    assert.are.equal("a\r\n0123456789\r\n", http.chunk("0123456789"))
    assert.are.equal("", http.chunk(""))
    assert.are.equal("0\r\n\r\n", http.last_chunk())
    local body = ("xyz"):rep(10000)
    local enc = http.encode_chunked(body, 1000)
    assert.are.equal(body, (feed(http.chunked_body(), enc, 333)))
    assert.are.equal(body, (drive(http.chunked_body(), enc)))
    local h = http.response(200, nil, nil, { chunked = true, keep_alive = true })
    assert.are.equal("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n", h)
  end)
end)
