package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local SCRIPT = H.root .. "/spec/scripts/hsmod.lua"

local function open(srv)
  local c = srv:connect()
  local l = assert(H.line(c))
  local id = assert(tonumber(l:match("^id (%d+)$")), "bad greeting " .. tostring(l))
  return c, id
end

local function ask(c, cmd)
  H.send(c, cmd .. "\n")
  local l, err = H.line(c)
  assert(l, cmd .. ": " .. tostring(err))
  return l
end

local function stats(c)
  local l = ask(c, "stats")
  local t = {}
  for k, v in l:gmatch("(%w[%w_]*)=(%S+)") do t[k] = tonumber(v) or v end
  return t
end

describe("the hotsock module", function()
  local srv
  before_each(function() srv = H.start(SCRIPT) end)
  after_each(H.cleanup)

  it("hs.after calls back once after the delay", function()
    local c = open(srv)
    local t0 = socket.gettime()
    H.send(c, "after\n")
    local l = assert(H.line(c))
    local elapsed = socket.gettime() - t0
    local ms = tonumber(l:match("^later (%d+)$"))
    assert.truthy(ms, l)
    assert.is_true(ms >= 95, "hs.now() moved " .. ms .. " ms")
    assert.is_true(elapsed >= 0.08, "fired after " .. elapsed .. " s")
    assert.is_true(H.quiet(c, 0.2), "hs.after fired twice")
  end)

  it("a cancelled hs.after timer never fires", function()
    local c = open(srv)
    H.send(c, "cancel\n")
    assert.are.equal("yes", H.line(c))
  end)

  it("hs.every repeats until cancelled", function()
    local c = open(srv)
    H.send(c, "every\n")
    assert.are.equal("done 5", H.line(c))
    assert.are.equal("count 5", H.line(c))
  end)

  it("hs.now returns increasing milliseconds", function()
    local c = open(srv)
    local t1, v1 = ask(c, "now"):match("^(%S+) (%S+)$")
    socket.sleep(0.1)
    local t2, v2 = ask(c, "now"):match("^(%S+) (%S+)$")
    assert.are.equal("number", t1)
    assert.are.equal("number", t2)
    local d = tonumber(v2) - tonumber(v1)
    assert.is_true(d >= 80 and d < 2000, "hs.now() advanced " .. d .. " over 100 ms")
  end)

  it("hs.clients iterates the live connections", function()
    local a = open(srv)
    local _ = open(srv)
    local c = open(srv)
    assert.are.equal("clients 3", ask(a, "count"))
    c:close()
    local ok = H.wait_until(function() return ask(a, "count") == "clients 2" end, 3, 0.02)
    assert.truthy(ok, "hs.clients still counts a closed connection")
  end)

  it("hs.broadcast sends to every client and returns the count", function()
    local a, b, c = open(srv), open(srv), open(srv)
    H.send(a, "all hi\n")
    assert.are.equal("all:hi", H.line(a))
    assert.are.equal("sent 3", H.line(a))
    assert.are.equal("all:hi", H.line(b))
    assert.are.equal("all:hi", H.line(c))
  end)

  it("hs.broadcast honours a filter function", function()
    local a, b, c = open(srv), open(srv), open(srv)
    assert.are.equal("joined", ask(a, "room red"))
    assert.are.equal("joined", ask(b, "room blue"))
    assert.are.equal("joined", ask(c, "room red"))
    H.send(a, "roomsay x\n")
    assert.are.equal("room:x", H.line(a))
    assert.are.equal("sent 2", H.line(a))
    assert.are.equal("room:x", H.line(c))
    -- b got nothing: the next thing it sees is a broadcast to all
    H.send(a, "all marker\n")
    assert.are.equal("all:marker", H.line(b))
  end)

  it("hs.broadcast leaves out the connection given as filter", function()
    local a, b, c = open(srv), open(srv), open(srv)
    H.send(a, "others y\n")
    assert.are.equal("sent 2", H.line(a))
    assert.are.equal("other:y", H.line(b))
    assert.are.equal("other:y", H.line(c))
  end)

  it("hs.log writes one line per call to stderr, naming the connection", function()
    -- use a connection whose id has two digits so it cannot hide in a time
    local c, id
    for _ = 1, 20 do
      c, id = open(srv)
      if id >= 10 then break end
    end
    assert.is_true(id >= 10)
    assert.are.equal("logged", ask(c, "log zq7"))
    srv:expect_log("error-marker zq7", 3, true)
    local text = srv:stderr()
    for _, m in ipairs({ "info-marker zq7", "warn-marker zq7", "error-marker zq7" }) do
      local lines = H.lines_with(text, m)
      assert.are.equal(1, #lines, m .. " lines: " .. #lines)
      assert.is_true(H.has_id_token(lines[1], id), "no connection id " .. id .. " in: " .. lines[1])
    end
  end)

  it("hs.stats counters follow the traffic", function()
    local a = open(srv)
    local s1 = stats(a)
    for _, k in ipairs({ "accepted", "rejected", "active", "closed", "bytes_in",
      "bytes_out", "frames_in", "handler_errors", "handler_timeouts",
      "oversize_frames", "outbuf_disconnects", "timeouts", "reload_ok",
      "reload_failed", "generation", "lua_memory" }) do
      assert.are.equal("number", type(s1[k]), "counter " .. k .. " = " .. tostring(s1[k]))
    end
    assert.are.equal(1, s1.active)
    assert.is_true(s1.accepted >= 1)
    assert.is_true(s1.lua_memory > 0)

    local b = open(srv)
    assert.are.equal("echo hello", ask(b, "hello"))
    assert.are.equal("echo world", ask(b, "world"))
    b:close()
    local c = open(srv)
    H.send(c, "boom\n")
    H.read_to_close(c)

    local s2 = H.wait_until(function()
      local s = stats(a)
      return s.closed >= s1.closed + 2 and s
    end, 3, 0.02)
    assert.truthy(s2, "closed did not go up by 2")
    assert.are.equal(s1.accepted + 2, s2.accepted)
    assert.are.equal(s1.closed + 2, s2.closed)
    assert.are.equal(1, s2.active)
    assert.are.equal(s1.handler_errors + 1, s2.handler_errors)
    assert.is_true(s2.bytes_in - s1.bytes_in >= #"hello\nworld\nboom\n",
      "bytes_in went up by " .. (s2.bytes_in - s1.bytes_in))
    assert.is_true(s2.frames_in - s1.frames_in >= 3,
      "frames_in went up by " .. (s2.frames_in - s1.frames_in))
    assert.is_true(s2.bytes_out > s1.bytes_out)
  end)

  it("hs.shared is a table shared by all connections", function()
    local a, b = open(srv), open(srv)
    assert.are.equal("table 1", ask(a, "shared"))
    assert.are.equal("table 2", ask(b, "shared"))
  end)

  it("hs.sleep and a nested coroutine's receive say where they work instead of crashing", function()
    local s = H.start([[
local hs = require "hotsock"
return {
  framing = "line",
  on_message = function(conn, line)
    local ok, err = pcall(hs.sleep, 10)
    local co = coroutine.wrap(function() return pcall(hs.sleep, 10) end)
    local ok2, err2 = co()
    conn:send(tostring(ok), " ", tostring(err):match("works only in a handle%(conn%) coroutine") or err,
              " | ", tostring(ok2), " ", tostring(err2):match("works only") or err2, "\n")
  end,
}
]])
    local c = s:connect()
    H.send(c, "x\n")
    assert.are.equal("false works only in a handle(conn) coroutine | false works only", H.line(c))
  end)
end)
