-- spec/framing_http_spec.lua: the "http" framing (src/http1.c) through the
-- real binary: the request table in event style and from conn:receive,
-- chunked bodies, 100-continue interim heads, refusals with their reasons,
-- and the options of {http = "request"}.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"

-- Each request comes back as one line describing the table the script got.
local DESCRIBE = [[
local function describe(req)
  local names = {}
  for k in pairs(req.headers) do names[#names + 1] = k end
  table.sort(names)
  local hs = {}
  for _, k in ipairs(names) do hs[#hs + 1] = k .. "=" .. req.headers[k]:gsub("\n", "\\n") end
  return ("%s %s path=%s query=%s v=%s/%d.%d cont=%s body=[%s] h={%s}"):format(req.method, req.target,
    req.path, tostring(req.query), req.version, req.major, req.minor, tostring(req.continue),
    tostring(req.body), table.concat(hs, ";"))
end
]]

local function event_script(framing)
  return DESCRIBE .. ([[
return {
  framing = %s,
  on_message = function(conn, req) conn:send(describe(req), "\n") end,
  on_frame_error = function(conn, why) conn:send("ERR ", why, "\n") end,
}
]]):format(framing)
end

describe('"http" framing', function()
  after_each(H.cleanup)

  it("hands each request over as one table, pipelined and byte by byte", function()
    local srv = H.start(event_script('"http"'))
    local stream = "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\nSet-Cookie: a=1, b\r\nSet-Cookie: c\r\n\r\n" ..
      "POST /e HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc" ..
      "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n4\r\ndefg\r\n0\r\nT: 1\r\n\r\n" ..
      "\r\nGET / HTTP/1.0\r\n\r\n"
    local want = {
      "GET /a?b=1 path=/a query=b=1 v=1.1/1.1 cont=nil body=[] h={host=x;set-cookie=a=1, b\\nc;x-a=1, 2}",
      "POST /e path=/e query=nil v=1.1/1.1 cont=nil body=[abc] h={content-length=3}",
      "POST /c path=/c query=nil v=1.1/1.1 cont=nil body=[abcdefg] h={transfer-encoding=chunked}",
      "GET / path=/ query=nil v=1.0/1.0 cont=nil body=[] h={}",
    }
    for _, bytewise in ipairs({ false, true }) do
      local c = srv:connect()
      if bytewise then H.send_bytewise(c, stream) else H.send(c, stream) end
      for i = 1, #want do assert.are.equal(want[i], H.line(c)) end
    end
  end)

  it("works in conn:receive", function()
    local srv = H.start(DESCRIBE .. [[
return {
  handle = function(conn)
    while true do
      local req, err = conn:receive("http")
      if not req then conn:send("ERR ", err, "\n") return end
      conn:send(describe(req), "\n")
      local line = conn:receive("*l") -- switch framings between requests
      conn:send("line ", line, "\n")
    end
  end,
}
]])
    local c = srv:connect()
    H.send(c, "PUT /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nokhello\r\nGET / HTTP/1.1\r\nA:b\r\n\r\nx\r\nGET / HTTP/1.1\r\n folded\r\n\r\n")
    assert.are.equal("PUT /x path=/x query=nil v=1.1/1.1 cont=nil body=[ok] h={content-length=2}", H.line(c))
    assert.are.equal("line hello", H.line(c))
    assert.are.equal("GET / path=/ query=nil v=1.1/1.1 cont=nil body=[] h={a=b}", H.line(c))
    assert.are.equal("line x", H.line(c))
    assert.are.equal("ERR obsolete header line folding", H.line(c))
  end)

  it("delivers a head that expects 100-continue first, with continue = true", function()
    local srv = H.start(DESCRIBE .. [[
return {
  framing = { http = "request", continue = true },
  on_message = function(conn, req)
    if req.continue then return conn:send("HTTP/1.1 100 Continue\r\n\r\n") end
    conn:send(describe(req), "\n")
  end,
}
]])
    local c = srv:connect()
    H.send(c, "POST /e HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert.are.equal("HTTP/1.1 100 Continue", H.line(c))
    assert.are.equal("", H.line(c))
    H.send(c, "hi")
    assert.are.equal("POST /e path=/e query=nil v=1.1/1.1 cont=nil body=[hi] h={content-length=2;expect=100-continue}",
      H.line(c))
    assert.is_true(H.quiet(c, 0.1))
  end)

  it("refuses what hotsock.http's parser refuses, with its words", function()
    local srv = H.start(event_script('{ http = "request", max_head = 200, max_line = 50, max_headers = 3 }'))
    for req, why in pairs({
      ["GARBAGE\r\n\r\n"] = "malformed request line",
      ["GET / HTTP/7.0\r\n\r\n"] = "unsupported HTTP version",
      ["GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n"] = "obsolete header line folding",
      ["GET / HTTP/1.1\r\nA: x\0y\r\n\r\n"] = "malformed header value",
      ["POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"] = "conflicting Content-Length headers",
      ["POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"] = "both Transfer-Encoding and Content-Length",
      ["POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"] = "unsupported Transfer-Encoding",
      ["POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY"] = "chunk data not followed by CRLF",
      ["GET /" .. ("x"):rep(60) .. " HTTP/1.1\r\n\r\n"] = "request line too long",
      ["GET / HTTP/1.1\r\nA: " .. ("x"):rep(300) .. "\r\n\r\n"] = "request head too large",
      ["GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n"] = "too many headers",
      ["POST / HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n"] = "body too large",
    }) do
      local c = srv:connect()
      H.send(c, req)
      assert.are.equal("ERR " .. why, H.line(c), req)
      assert.are.equal("closed", (H.read_to_close(c)))
    end
    srv:expect_log("body too large %(framing http max_head 200 max_line 50 max_headers 3")
  end)

  it("checks its options", function()
    for _, spec in ipairs({ '{ http = "response" }', '{ http = true }', '{ http = "request", max_head = 0 }',
                            '{ http = "request", max_headers = 10001 }', '{ line = 1, max_head = 10 }',
                            '{ delimiter = "x", continue = true }', '{ http = "request", continue = 1 }',
                            '{ http = "request", exact = 3 }', '"HTTP"' }) do
      local rc, out, err = H.run({ "--check", H.write_script(
        "return { framing = " .. spec .. ", on_message = function() end }\n") }, { timeout = 5 })
      assert.are.equal(2, rc, spec .. ": " .. out .. err)
      assert.truthy(err:find("framing", 1, true), err)
    end
    local rc, out, err = H.run({ "--check", H.write_script(
      'return { framing = { http = "request", max_head = 100, max_line = 10, max_headers = 5, continue = false }, on_message = function() end }\n') },
      { timeout = 5 })
    assert.are.equal(0, rc, out .. err)
  end)
end)
