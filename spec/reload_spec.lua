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

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- The ways editors save a file. Each must give exactly one reload.
local save = {}
-- in place: the same inode rewritten without truncating, in two chunks (an
-- editor's buffered writes); the new text must not be shorter
function save.in_place(path, text)
  assert(#text >= #read(path), "in-place text must not be shorter")
  local f = assert(io.open(path, "r+b"))
  local half = #text // 2
  f:write(text:sub(1, half))
  f:flush()
  socket.sleep(0.01)
  f:write(text:sub(half + 1))
  f:close()
end
-- truncate, then write a moment later (slower than the debounce)
function save.truncate_write(path, text)
  local f = assert(io.open(path, "wb"))
  f:flush()
  socket.sleep(0.15)
  f:write(text)
  f:close()
end
-- write a hidden temporary file and rename it onto the script (vim's swap
-- style, IDEs' atomic save)
function save.temp_rename(path, text)
  local tmp = path:gsub("([^/]+)$", ".%1.swp")
  write(tmp, text)
  assert(os.rename(tmp, path))
end
-- move the script aside as a backup, write a new one a moment later, drop the
-- backup (vim's default on Linux): the file is missing for a while
function save.backup_rename(path, text)
  assert(os.rename(path, path .. "~"))
  socket.sleep(0.15)
  write(path, text)
  os.remove(path .. "~")
end
-- write "script.lua~" and rename it onto the script
function save.tilde_rename(path, text)
  write(path .. "~", text)
  assert(os.rename(path .. "~", path))
end

-- the server's log, one entry per line
local function log_lines(srv)
  local out = {}
  for l in srv:stderr():gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

-- wait until gen(c) reports generation `want` (or more), let late events
-- settle, and return generation, reload_ok, reload_failed
local function settle_gen(c, want)
  H.wait_until(function() return gen(c) >= want end, 3, 0.02)
  socket.sleep(0.4)
  return gen(c)
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

  it("a change to a module in a subfolder (lib/x.lua, pkg/init.lua) reloads", function()
    local srv = H.start([[
local a = require "lib.words"
local b = require "pkg"
return {
  framing = "line",
  on_message = function(conn, line) conn:send(a, " ", b, " ", line, "\n") end,
}
]], { files = { ["lib/words.lua"] = "return 'alpha'\n", ["pkg/init.lua"] = "return 'one'\n",
                ["lib/unused.lua"] = "return 0\n" } })
    local dir = srv.script:gsub("/script%.lua$", "")
    local c = srv:connect()
    assert.are.equal("alpha one x", ask(c, "x"))
    socket.sleep(0.1)
    write(dir .. "/lib/words.lua", "return 'beta'\n")
    assert.are.equal("beta one x", await(c, "x", "beta one x"))
    write(dir .. "/pkg/init.lua", "return 'two'\n")
    assert.are.equal("beta two x", await(c, "x", "beta two x"))
    assert.are.equal(2, srv:count_log("reloaded (file change)", true))
    -- a file the script did not load changes nothing
    write(dir .. "/lib/unused.lua", "return 1\n")
    socket.sleep(0.3)
    assert.are.equal(2, srv:count_log("reloaded", true))
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
  for _, how in ipairs({ "in_place", "truncate_write", "temp_rename", "backup_rename", "tilde_rename" }) do
    it("a save by " .. how:gsub("_", " ") .. " gives exactly one reload", function()
      local srv = H.start(version(1))
      local c = srv:connect()
      assert.are.equal("hello v1", H.line(c))
      assert.are.equal("ok", ask(c, "set eve"))
      local g0 = gen(c)
      socket.sleep(0.1)
      save[how](srv.script, version(2))
      local g, ok, failed = settle_gen(c, g0 + 1)
      assert.are.equal(g0 + 1, g, "generation after one save")
      assert.are.equal(1, ok)
      assert.are.equal(0, failed, "a half-saved file was loaded:\n" .. srv:stderr())
      assert.are.equal(1, srv:count_log("reloaded (file change)", true))
      assert.are.equal("v2 eve", ask(c, "get"))
      -- the watch outlives the save: the next edit is seen too
      write(srv.script, version(3))
      assert.are.equal("v3 eve", await(c, "get", "v3 eve"))
    end)
  end

  it("bytes of a message that straddles a reload reach the new handlers", function()
    local srv = H.start(version(1), { args = { "--no-watch" } })
    local c = srv:connect()
    assert.are.equal("hello v1", H.line(c))
    c:setoption("tcp-nodelay", true)
    H.send(c, "hal")
    socket.sleep(0.05)
    write(srv.script, version(2))
    srv:signal("HUP")
    srv:expect_log("reloaded %(SIGHUP%): generation 1")
    H.send(c, "f done\n")
    assert.are.equal("v2 echo half done", H.line(c))
  end)

  it("on_reload(old) carries module-level state that is not in hs.shared", function()
    local src = [[
local V = %d
local hits = 0
local M = {
  framing = "line",
  on_message = function(conn, line)
    hits = hits + 1
    conn:send("V", V, " hits ", hits, "\n")
  end,
}
function M.hits() return hits end
%s
return M
]]
    local carry = "function M.on_reload(old) hits = old.hits() end"
    local srv = H.start(src:format(1, ""), { args = { "--no-watch" } })
    local c = srv:connect()
    assert.are.equal("V1 hits 1", ask(c, "x"))
    assert.are.equal("V1 hits 2", ask(c, "x"))
    write(srv.script, src:format(2, carry))
    srv:signal("HUP")
    srv:expect_log("reloaded %(SIGHUP%): generation 1")
    assert.are.equal("V2 hits 3", ask(c, "x"))
    -- without on_reload the old chunk's locals are gone
    write(srv.script, src:format(3, ""))
    srv:signal("HUP")
    srv:expect_log("reloaded %(SIGHUP%): generation 2")
    assert.are.equal("V3 hits 1", ask(c, "x"))
  end)

  it("conn fields of every kind and hs.shared survive several reloads on many clients", function()
    local src = [[
local hs = require "hotsock"
hs.shared.list = hs.shared.list or {}
local V = %d
return {
  framing = "line",
  on_connect = function(conn)
    conn.tags = { "t" .. conn.id }
    conn.count = 0
    conn.fn = function() return "f" .. conn.id end
  end,
  on_message = function(conn, line)
    conn.count = conn.count + 1
    hs.shared.list[#hs.shared.list + 1] = line
    conn:send("V", V, " ", conn.tags[1], " ", conn.count, " ", conn.fn(), " ",
      #hs.shared.list, "\n")
  end,
}
]]
    local srv = H.start(src:format(1), { args = { "--no-watch" } })
    local cs, ids = {}, {}
    for i = 1, 5 do
      cs[i] = srv:connect()
      local r = ask(cs[i], "a")
      ids[i] = tonumber(r:match("^V1 t(%d+) 1 f%d+ %d+$"))
      assert.is_not_nil(ids[i], r)
    end
    local n = 5
    for v = 2, 4 do
      write(srv.script, src:format(v))
      srv:signal("HUP")
      srv:expect_log("reloaded %(SIGHUP%): generation " .. (v - 1))
      for i = 1, 5 do
        n = n + 1
        assert.are.equal(("V%d t%d %d f%d %d"):format(v, ids[i], v, ids[i], n), ask(cs[i], "a"))
      end
    end
  end)

  -- each broken version: its text and the file:line its one log line names
  local broken = {
    { "a syntax error", "return {\n  framing = 'line',\n  on_message = function(c, m) c:send(m end,\n}\n", "script.lua:3" },
    { "a runtime error in the chunk", "local t = nil\nlocal x = t.field\nreturn {}\n", "script.lua:2" },
    { "a top-level infinite loop", "local n = 0\nwhile true do n = n + 1 end\nreturn {}\n", "script.lua:2" },
    { "an error in on_reload", "return {\n  framing = 'line',\n  on_message = function(c, m) c:send('bad\\n') end,\n  on_reload = function(old)\n    error('cannot carry ' .. tostring(old.version))\n  end,\n}\n", "script.lua:5" },
    { "an endless on_reload", "return {\n  framing = 'line',\n  on_message = function(c, m) c:send('bad\\n') end,\n  on_reload = function(old)\n    while true do end\n  end,\n}\n", "script.lua:5" },
    { "an endless on_reload caught by a tail-call pcall", "return {\n  framing = 'line',\n  on_message = function(c, m) c:send('bad\\n') end,\n  on_reload = function(old)\n    return pcall(function() while true do end end)\n  end,\n}\n", "on_reload took longer than 500 ms" },
    { "an invalid module", "return {\n  handle = function(c) end,\n  on_message = function(c, m) end,\n}\n", "script.lua" },
  }
  for _, b in ipairs(broken) do
    it("a reload with " .. b[1] .. " fails with one log line naming " .. b[3] .. "; the old code keeps serving", function()
      local srv = H.start(version(1), { args = { "--no-watch" } })
      local c = srv:connect()
      assert.are.equal("hello v1", H.line(c))
      assert.are.equal("ok", ask(c, "set fay"))
      local g0 = gen(c)
      local lines_before = #log_lines(srv)
      write(srv.script, b[2])
      srv:signal("HUP")
      local failed = H.wait_until(function()
        local _, _, f = gen(c)
        return f >= 1 and f
      end, 4, 0.05)
      assert.are.equal(1, failed)
      local g, ok = gen(c)
      assert.are.equal(g0, g)
      assert.are.equal(0, ok)
      assert.are.equal("v1 fay", ask(c, "get"))
      local d = srv:connect()
      assert.are.equal("hello v1", H.line(d))
      -- exactly one new log line, and it says where and why
      local all = log_lines(srv)
      assert.are.equal(lines_before + 1, #all, "log lines after the failure:\n" .. srv:stderr())
      local line = all[#all]
      assert.truthy(line:find("reload (SIGHUP) failed in", 1, true), line)
      assert.truthy(line:find(b[3], 1, true), "no " .. b[3] .. " in: " .. line)
      -- an error in on_reload is the reload's, not a handler error
      assert.are.equal(0, srv:count_log("error in", true))
      -- and the next good version loads
      write(srv.script, version(2))
      srv:signal("HUP")
      assert.are.equal("v2 fay", await(c, "get", "v2 fay"))
    end)
  end

  local probation = [[
local hs = require "hotsock"
local V = %d
return {
  framing = "line",
  reload = { rollback_errors = 3, within = %d },
  on_message = function(conn, line)
    if line == "boom" and V == 2 then error("boom in V2") end
    local s = hs.stats()
    conn:send("V", V, " gen ", s.generation, " ", tostring(conn.nick), "\n")
    if line ~= "boom" and line ~= "x" then conn.nick = line end
  end,
  on_error = function(conn, err) conn:send("err\n") end,
}
]]

  it("probation: rollback_errors errors within the window roll back to the previous code", function()
    local srv = H.start(probation:format(1, 10000), { args = { "--no-watch" } })
    local c = srv:connect()
    assert.are.equal("V1 gen 0 nil", ask(c, "gil"))
    write(srv.script, probation:format(2, 10000))
    srv:signal("HUP")
    assert.are.equal("V2 gen 1 gil", await(c, "x", "V2 gen 1 gil"))
    assert.are.equal("err", ask(c, "boom"))
    assert.are.equal("err", ask(c, "boom"))
    assert.are.equal("V2 gen 1 gil", ask(c, "x"), "rolled back before rollback_errors errors")
    assert.are.equal("err", ask(c, "boom"))
    -- the third error rolls back; the live client stays, with its fields
    assert.are.equal("V1 gen 2 gil", await(c, "x", "V1 gen 2 gil"))
    local line = srv:expect_log("[^\n]*rolled back[^\n]*")
    assert.truthy(line:find("3 error", 1, true), line)
    assert.are.equal(1, srv:count_log("rolled back", true))
    local d = srv:connect()
    assert.are.equal("V1 gen 2 nil", ask(d, "x"))
    assert.are.equal("V1 gen 2 gil", ask(c, "boom"))
  end)

  it("probation: a reload asked for in the same loop turn does not replace the rollback", function()
    -- V2's on_error asks for a reload right after the third error, the one
    -- that rolls back
    local v2 = probation:format(2, 10000):gsub('on_error = function%(conn, err%) conn:send%("err\\n"%) end,',
      'on_error = function(conn, err) conn.errs = (conn.errs or 0) + 1 ' ..
      'if conn.errs == 3 then hs.reload() end conn:send("err\\n") end,')
    assert.truthy(v2:find("hs.reload()", 1, true))
    local srv = H.start(probation:format(1, 10000), { args = { "--no-watch" } })
    local c = srv:connect()
    assert.are.equal("V1 gen 0 nil", ask(c, "again"))
    write(srv.script, v2)
    srv:signal("HUP")
    assert.are.equal("V2 gen 1 again", await(c, "x", "V2 gen 1 again"))
    for _ = 1, 3 do assert.are.equal("err", ask(c, "boom")) end
    -- rolled back to V1 (generation 2), then the file (V2) reloaded (generation 3)
    assert.are.equal("V2 gen 3 again", await(c, "x", "V2 gen 3 again"))
    assert.are.equal(1, srv:count_log("rolled back", true))
    assert.are.equal(1, srv:count_log("reloaded (hs.reload): generation 3", true))
  end)

  it("probation: errors after the window do not roll back", function()
    local srv = H.start(probation:format(1, 200), { args = { "--no-watch" } })
    local c = srv:connect()
    assert.are.equal("V1 gen 0 nil", ask(c, "x"))
    write(srv.script, probation:format(2, 200))
    srv:signal("HUP")
    assert.are.equal("V2 gen 1 nil", await(c, "x", "V2 gen 1 nil"))
    socket.sleep(0.4)
    for _ = 1, 4 do assert.are.equal("err", ask(c, "boom")) end
    socket.sleep(0.1)
    assert.are.equal("V2 gen 1 nil", ask(c, "x"))
    assert.are.equal(0, srv:count_log("rolled back", true))
  end)

  it("--no-watch: edits to the script and its modules reload only on SIGHUP", function()
    local srv = H.start([[
local word = require "wordmod"
local hs = require "hotsock"
return {
  framing = "line",
  on_message = function(conn, line)
    conn:send(word, " gen ", hs.stats().generation, "\n")
  end,
}
]], { args = { "--no-watch" }, files = { ["wordmod.lua"] = "return 'alpha'\n" } })
    local c = srv:connect()
    assert.are.equal("alpha gen 0", ask(c, "x"))
    write(srv.script:gsub("script%.lua$", "wordmod.lua"), "return 'beta'\n")
    write(srv.script, read(srv.script) .. "-- edited\n")
    socket.sleep(0.4)
    assert.are.equal("alpha gen 0", ask(c, "x"))
    assert.are.equal(0, srv:count_log("reload", true))
    srv:signal("HUP")
    assert.are.equal("beta gen 1", await(c, "x", "beta gen 1"))
    assert.are.equal(1, srv:count_log("reloaded (SIGHUP): generation 1 in", true))
  end)
end)
