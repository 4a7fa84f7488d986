-- examples/http.lua driven by the real clients: curl and wrk, plus raw
-- sockets for pipelining, byte-by-byte requests and malformed input.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"

local have = H.have

-- Run a shell command; returns stdout (stderr too when both = true) and
-- the exit code.
local function sh(cmd, both)
  local f = assert(io.popen(cmd .. (both and " 2>&1" or " 2>/dev/null"), "r"))
  local out = f:read("a")
  local ok, _, code = f:close()
  return out, ok and 0 or code
end

local function start()
  local srv = H.start("examples/http.lua")
  srv.url = "http://127.0.0.1:" .. srv.port
  return srv
end

local function curl(args)
  return sh("timeout 20 curl -sS " .. args)
end

-- Read one response from a LuaSocket client: status, headers (lower-case
-- names), body (Content-Length or chunked).
local function read_response(c)
  local status_line, err = H.line(c)
  if not status_line then return nil, err end
  local status = tonumber(status_line:match("^HTTP/1%.1 (%d%d%d) "))
  local headers = {}
  while true do
    local l = assert(H.line(c))
    if l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.-)%s*$")
    headers[k:lower()] = v
  end
  local body = ""
  if headers["content-length"] then
    local n = tonumber(headers["content-length"])
    body = n > 0 and assert(H.recv(c, n)) or ""
  elseif headers["transfer-encoding"] == "chunked" then
    local parts = {}
    while true do
      local n = tonumber(assert(H.line(c)), 16)
      if n == 0 then assert.are.equal("", H.line(c)) break end
      parts[#parts + 1] = H.recv(c, n)
      assert.are.equal("", H.line(c))
    end
    body = table.concat(parts)
  end
  return { status = status, headers = headers, body = body, line = status_line }
end

describe("examples/http.lua", function()
  after_each(H.cleanup)

  if not have("curl") then
    pending("curl is not installed")
    return
  end

  it("answers GET / with curl", function()
    local srv = start()
    local out, code = curl("-i " .. srv.url .. "/")
    assert.are.equal(0, code)
    assert.matches("^HTTP/1.1 200 OK\r\n", out)
    assert.matches("\r\nContent%-Length: 19\r\n", out)
    assert.matches("\r\n\r\nhello from hotsock\n$", out)
    out = curl("-o /dev/null -w '%{http_code}' " .. srv.url .. "/nowhere")
    assert.are.equal("404", out)
    out = curl("-o /dev/null -w '%{http_code}' -X DELETE " .. srv.url .. "/")
    assert.are.equal("405", out)
    out = curl("-I " .. srv.url .. "/")
    assert.matches("Content%-Length: 19", out)
    assert.is_nil(out:find("hello", 1, true))
  end)

  it("echoes a POST body sent with Content-Length", function()
    local srv = start()
    local out = curl("--data-binary 'some bytes here' " .. srv.url .. "/echo")
    assert.are.equal("some bytes here", out)
    -- larger than one body frame: read in several {exact = n} pieces
    local body = ("0123456789abcdef"):rep(20000) -- 320000 bytes
    local file = H.write_script(body, "body.bin")
    out = curl("--data-binary @" .. H.quote(file) .. " " .. srv.url .. "/echo")
    assert.are.equal(#body, #out)
    assert.is_true(out == body)
  end)

  it("echoes a chunked POST body", function()
    local srv = start()
    local out = sh("printf 'chunk me\\nplease' | timeout 20 curl -sS -H 'Transfer-Encoding: chunked' --data-binary @- " ..
      srv.url .. "/echo")
    assert.are.equal("chunk me\nplease", out)
    local body = ("xyz"):rep(100000)
    local file = H.write_script(body, "body.bin")
    out = sh("timeout 20 curl -sS -H 'Transfer-Encoding: chunked' --data-binary @- " ..
      srv.url .. "/echo < " .. H.quote(file))
    assert.are.equal(#body, #out)
    assert.is_true(out == body)
  end)

  it("reuses one connection for two URLs in one curl command", function()
    local srv = start()
    local out = sh("timeout 20 curl -sv " .. srv.url .. "/ --next --data-binary second " .. srv.url .. "/echo", true)
    assert.matches("hello from hotsock\n", out)
    assert.matches("second", out)
    assert.matches("[Rr]e%-using existing connection", out)
    local _, connects = out:gsub("Connected to", "")
    assert.are.equal(1, connects, out)
  end)

  it("answers pipelined requests in order on one connection", function()
    local srv = start()
    local c = srv:connect()
    H.send(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n" ..
              "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" ..
              "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
                "3\r\nabc\r\n4;ext\r\ndefg\r\n0\r\nX-Trailer: 1\r\n\r\n" ..
              "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n" ..
              "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
    local r = read_response(c)
    assert.are.equal(200, r.status)
    assert.are.equal("hello from hotsock\n", r.body)
    r = read_response(c)
    assert.are.equal("hello", r.body)
    r = read_response(c)
    assert.are.equal("abcdefg", r.body)
    r = read_response(c)
    assert.are.equal("chunked", r.headers["transfer-encoding"])
    assert.are.equal("line 1\nline 2\nline 3\nline 4\nline 5\n", r.body)
    r = read_response(c)
    assert.are.equal(404, r.status)
    assert.are.equal("keep-alive", r.headers.connection)
    assert.is_true(H.quiet(c, 0.1))
  end)

  it("parses a request sent one byte at a time", function()
    local srv = start()
    local c = srv:connect()
    H.send_bytewise(c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
                       "2\r\nok\r\n0\r\n\r\n")
    local r = read_response(c)
    assert.are.equal(200, r.status)
    assert.are.equal("ok", r.body)
  end)

  it("closes after an HTTP/1.0 request or Connection: close", function()
    local srv = start()
    local c = srv:connect()
    H.send(c, "GET / HTTP/1.0\r\n\r\n")
    local r = read_response(c)
    assert.are.equal(200, r.status)
    assert.are.equal("close", r.headers.connection)
    assert.are.equal("closed", (H.read_to_close(c)))
    c = srv:connect()
    H.send(c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    r = read_response(c)
    assert.are.equal("keep-alive", r.headers.connection)
    r = read_response(c)
    assert.are.equal("close", r.headers.connection)
    assert.are.equal("closed", (H.read_to_close(c)))
  end)

  it("answers 400 to a malformed request and closes", function()
    local srv = start()
    for _, req in ipairs({
      "GARBAGE\r\n\r\n",
      "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
      "GET / HTTP/7.0\r\n\r\n",
      "POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST /echo HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
      "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY",
    }) do
      local c = srv:connect()
      H.send(c, req)
      local r = read_response(c)
      assert.are.equal(400, r and r.status, req)
      assert.are.equal("close", r.headers.connection)
      assert.are.equal("closed", (H.read_to_close(c)))
    end
    -- the server still serves
    assert.are.equal("hello from hotsock\n", curl(srv.url .. "/"))
  end)

  it("answers 414 to a request line too long and 431 to a head too large", function()
    local srv = start()
    local c = srv:connect()
    H.send(c, "GET /" .. ("x"):rep(20000) .. " HTTP/1.1\r\n\r\n")
    local r = read_response(c)
    assert.are.equal(414, r.status)
    assert.are.equal("closed", (H.read_to_close(c)))
    c = srv:connect()
    H.send(c, "GET / HTTP/1.1\r\nX-Big: " .. ("x"):rep(10000) .. "\r\nX-Big2: " .. ("x"):rep(10000) .. "\r\n\r\n")
    r = read_response(c)
    assert.are.equal(431, r.status)
    assert.are.equal("closed", (H.read_to_close(c)))
  end)

  it("answers 413 to a body over the limit", function()
    local srv = start()
    local file = H.write_script(("x"):rep(2 * 1024 * 1024), "big.bin")
    local out = curl("-o /dev/null -w '%{http_code}' --data-binary @" .. H.quote(file) .. " " .. srv.url .. "/echo")
    assert.are.equal("413", out)
    out = sh("timeout 20 curl -sS -o /dev/null -w '%{http_code}' -H 'Transfer-Encoding: chunked' --data-binary @- " ..
      srv.url .. "/echo < " .. H.quote(file))
    assert.are.equal("413", out)
    -- announced over a raw socket, without waiting for 100 Continue
    local c = srv:connect()
    H.send(c, "POST /echo HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n" .. ("x"):rep(100000))
    local r = read_response(c)
    assert.are.equal(413, r.status)
    assert.are.equal("closed", (H.read_to_close(c)))
    assert.are.equal("hello from hotsock\n", curl(srv.url .. "/"))
  end)

  it("sends 100 Continue when the client asks for it", function()
    local srv = start()
    local c = srv:connect()
    H.send(c, "POST /echo HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert.are.equal("HTTP/1.1 100 Continue", H.line(c))
    assert.are.equal("", H.line(c))
    H.send(c, "hi")
    local r = read_response(c)
    assert.are.equal(200, r.status)
    assert.are.equal("hi", r.body)
  end)

  it("finishes a request whose body spans a reload", function()
    local srv = start()
    local c = srv:connect()
    H.send(c, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nbefo")
    H.sleep(0.05)
    srv:signal("HUP")
    srv:expect_log("reloaded")
    H.send(c, "re\r\n5\r\nafter\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    local r = read_response(c)
    assert.are.equal(200, r.status)
    assert.are.equal("beforeafter", r.body)
    r = read_response(c)
    assert.are.equal("hello from hotsock\n", r.body)
  end)

  it("serves wrk with no socket errors and only 2xx answers", function()
    if not have("wrk") then
      pending("wrk is not installed")
      return
    end
    local srv = start()
    local out, code = sh("timeout 20 wrk -t1 -c10 -d1s " .. srv.url .. "/", true)
    assert.are.equal(0, code, out)
    assert.matches("Requests/sec:%s+[%d%.]+", out)
    assert.is_nil(out:find("Socket errors", 1, true), out)
    assert.is_nil(out:find("Non-2xx", 1, true), out)
    local n = tonumber(out:match("(%d+) requests in"))
    assert.is_true(n and n > 0, out)
  end)
end)
