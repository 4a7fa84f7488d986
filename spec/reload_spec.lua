package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local function version(v)
  return ([[
local hs = require "hotsock"
hs.shared.count = (hs.shared.count or 0) + 1
local V = %d
local VS = tostring(V)
return {
  version = V,
  framing = "line",
  on_connect = function(conn) conn:send("hello v", VS, "\n") end,
  on_message = function(conn, line)
    local cmd, rest = line:match("^(%%S*)%%s?(.*)$")
    if cmd == "set" then
      conn.nick = rest
      conn:send("ok\n")
    elseif cmd == "get" then
      conn:send("v", VS, " ", tostring(conn.nick), "\n")
    elseif cmd == "gen" then
      local s = hs.stats()
      conn:send("gen ", tostring(s.generation), " ok ", tostring(s.reload_ok),
        " failed ", tostring(s.reload_failed), "\n")
    elseif cmd == "shared" then
      conn:send("shared ", tostring(hs.shared.count), " prev ", tostring(hs.shared.prev), "\n")
    elseif cmd == "reload" then
      hs.reload()
      conn:send("asked\n")
    else
      conn:send("v", VS, " echo ", line, "\n")
    end
  end,
  on_reload = function(old) hs.shared.prev = old.version end,
}
]]):format(v)
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function ask(c, cmd)
  H.send(c, cmd .. "\n")
  return assert(H.line(c))
end

local function gen(c)
  local g, ok, failed = ask(c, "gen"):match("^gen (%d+) ok (%d+) failed (%d+)$")
  return tonumber(g), tonumber(ok), tonumber(failed)
end

-- poll `cmd` until the answer is `want`; returns the last answer
local function await(c, cmd, want, timeout)
  local last
  H.wait_until(function()
    last = ask(c, cmd)
    return last == want
  end, timeout or 3, 0.05)
  return last
end

describe("hot reload", function()
  after_each(H.cleanup)

  it("SIGHUP swaps the handlers under a live client, keeping its fields", function()
    local srv = H.start(version(1), { args = { "--no-watch" } })
    local c = srv:connect()
    assert.are.equal("hello v1", H.line(c))
    assert.are.equal("ok", ask(c, "set ann"))
    local g0 = gen(c)
    write(srv.script, version(2))
    socket.sleep(0.3)
    assert.are.equal("v1 ann", ask(c, "get"), "reloaded without a trigger under --no-watch")
    srv:signal("HUP")
    assert.are.equal("v2 ann", await(c, "get", "v2 ann"))
    local g1, ok1, failed1 = gen(c)
    assert.are.equal(g0 + 1, g1)
    assert.are.equal(1, ok1)
    assert.are.equal(0, failed1)
    assert.are.equal("shared 2 prev 1", ask(c, "shared"))
    local d = srv:connect()
    assert.are.equal("hello v2", H.line(d))
    assert.are.equal(0, srv:stop())
  end)

  it("a change to the script file reloads it", function()
    local srv = H.start(version(1))
    local c = srv:connect()
    assert.are.equal("hello v1", H.line(c))
    assert.are.equal("ok", ask(c, "set bo"))
    socket.sleep(0.1)
    write(srv.script, version(3))
    assert.are.equal("v3 bo", await(c, "get", "v3 bo"))
  end)

  it("hs.reload() reloads from the script", function()
    local srv = H.start(version(1), { args = { "--no-watch" } })
    local c = srv:connect()
    assert.are.equal("hello v1", H.line(c))
    write(srv.script, version(4))
    assert.are.equal("asked", ask(c, "reload"))
    assert.are.equal("v4 nil", await(c, "get", "v4 nil"))
  end)

  it("a broken new version is refused: the old one keeps serving and the error names file:line", function()
    local srv = H.start(version(1), { args = { "--no-watch" } })
    local c = srv:connect()
    assert.are.equal("hello v1", H.line(c))
    assert.are.equal("ok", ask(c, "set cy"))
    write(srv.script, "return {\n  framing = 'line',\n  on_message = function(conn, m) conn:send(m end,\n}\n")
    srv:signal("HUP")
    local failed = H.wait_until(function()
      local _, _, f = gen(c)
      return f >= 1 and f
    end, 3, 0.05)
    assert.are.equal(1, failed)
    assert.are.equal("v1 cy", ask(c, "get"))
    assert.truthy(srv:stderr():find("script.lua:3", 1, true), "reload error without file:line:\n" .. srv:stderr())
    local d = srv:connect()
    assert.are.equal("hello v1", H.line(d))
    -- a fixed version then loads
    write(srv.script, version(5))
    srv:signal("HUP")
    assert.are.equal("v5 cy", await(c, "get", "v5 cy"))
  end)

  it("a new version that does not return a table is refused", function()
    local srv = H.start(version(1), { args = { "--no-watch" } })
    local c = srv:connect()
    assert.are.equal("hello v1", H.line(c))
    write(srv.script, "return 42\n")
    srv:signal("HUP")
    local failed = H.wait_until(function()
      local _, _, f = gen(c)
      return f >= 1 and f
    end, 3, 0.05)
    assert.are.equal(1, failed)
    assert.are.equal("v1 nil", ask(c, "get"))
  end)
  it("a new version that runs past the load budget is refused", function()
    local srv = H.start(version(1), { args = { "--no-watch" } })
    local c = srv:connect()
    assert.are.equal("hello v1", H.line(c))
    write(srv.script, "while true do end\nreturn {}\n")
    local t0 = socket.gettime()
    srv:signal("HUP")
    local failed = H.wait_until(function()
      local _, _, f = gen(c)
      return f >= 1 and f
    end, 4, 0.05)
    assert.are.equal(1, failed, "a looping reload was not refused")
    assert.is_true(socket.gettime() - t0 < 3)
    assert.are.equal("v1 nil", ask(c, "get"))
  end)

  it("globals of the old version do not leak into the new one", function()
    local src = [[
LEAK = (LEAK or 0) + 1
local seen = LEAK
return {
  framing = "line",
  on_message = function(conn, line) conn:send("V%d seen ", tostring(seen), "\n") end,
}
]]
    local srv = H.start(src:format(1), { args = { "--no-watch" } })
    local c = srv:connect()
    assert.are.equal("V1 seen 1", ask(c, "x"))
    write(srv.script, src:format(2))
    srv:signal("HUP")
    assert.are.equal("V2 seen 1", await(c, "x", "V2 seen 1"))
  end)

  it("a change to a module required from the script's folder reloads", function()
    local srv = H.start([[
local word = require "wordmod"
return {
  framing = "line",
  on_message = function(conn, line) conn:send(word, " ", line, "\n") end,
}
]], { files = { ["wordmod.lua"] = "return 'alpha'\n" } })
    local c = srv:connect()
    assert.are.equal("alpha x", ask(c, "x"))
    socket.sleep(0.1)
    write(srv.script:gsub("script%.lua$", "wordmod.lua"), "return 'beta'\n")
    assert.are.equal("beta x", await(c, "x", "beta x"))
  end)

  it("live coroutine handlers finish on the code they started with", function()
    local src = [[
return {
  handle = function(conn)
    while true do
      local l = conn:receive("*l")
      if not l then return end
      conn:send("C%d ", l, "\n")
    end
  end,
}
]]
    local srv = H.start(src:format(1), { args = { "--no-watch" } })
    local old = srv:connect()
    assert.are.equal("C1 a", ask(old, "a"))
    write(srv.script, src:format(2))
    srv:signal("HUP")
    local new = srv:connect()
    local got = H.wait_until(function()
      local l = ask(new, "b")
      if l == "C2 b" then return l end
      new:close()
      new = srv:connect()
    end, 3, 0.05)
    assert.are.equal("C2 b", got)
    assert.are.equal("C1 c", ask(old, "c"))
  end)
end)
