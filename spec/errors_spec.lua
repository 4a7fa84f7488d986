package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local function open(srv)
  local c = srv:connect()
  local l = assert(H.line(c))
  local id = assert(tonumber(l:match("^id (%d+)$")), "bad greeting " .. tostring(l))
  return c, id
end

-- c's handler was stopped by the budget: nothing more came, the connection
-- was closed, and on_close heard "handler timeout"
local function stopped(srv, c, id, secs)
  local err, data = H.read_to_close(c, secs or 5)
  assert.are.equal("", data, "the handler went on after its budget")
  assert.truthy(err == "closed" or err == "connection reset by peer", tostring(err))
  srv:expect_log("@@ CLOSE " .. id .. " handler timeout\n", 3, true)
end

local function ask(c, cmd)
  H.send(c, cmd .. "\n")
  local l, err = H.line(c)
  assert(l, cmd .. ": " .. tostring(err))
  return l
end

local BASE = [[
local hs = require "hotsock"
local M = {
  framing = "line",
  %s
  on_connect = function(conn) conn:send("id ", tostring(conn.id), "\n") end,
  on_message = function(conn, line)
    if line == "boom" then
      local t = nil
      error("kaboom-marker")
    elseif line == "spin" then
      while true do end
    elseif line == "pspin" then
      pcall(function() while true do end end)
      conn:send("pcall swallowed the budget\n")
    elseif line == "tailspin" then
      return pcall(function() while true do end end)
    elseif line == "slowloop" then -- few instructions, each a slow call into C
      while true do local s = string.rep("x", 1 << 19) end
    elseif line == "sleepspin" then -- blocked past the budget, then Lua again
      os.execute("sleep 0.3")
      local t = os.clock() + 0.05
      while os.clock() < t do end
      conn:send("survived\n")
    elseif line == "onelong" then -- one call into C past the budget, then done
      local s = string.rep("x", 1 << 24)
      conn:send("made ", #s, "\n")
    elseif line == "unhook" then
      local ok, err = pcall(debug.sethook)
      conn:send("sethook ", tostring(ok), " ", tostring(err):match("not available") or tostring(err), "\n")
    elseif line == "mt" then
      -- the metatable is out of reach: no __index to call on something else,
      -- no __gc to add
      local ok, err = pcall(debug.getmetatable, conn)
      conn:send("mt ", tostring(getmetatable(conn)), " ", tostring(ok), " ",
        tostring(err):match("not available") or tostring(err), "\n")
    elseif line == "stats" then
      local s = hs.stats()
      conn:send("errors ", tostring(s.handler_errors), " timeouts ", tostring(s.handler_timeouts), "\n")
    else
      conn:send("pong ", line, "\n")
    end
  end,
  on_close = function(conn, reason) io.stderr:write("@@ CLOSE ", conn.id, " ", reason, "\n") end,
}
return M
]]

local function script(extra) return BASE:format(extra or "") end

describe("errors in handlers", function()
  after_each(H.cleanup)

  it("a Lua error in on_message is logged once with a traceback and closes only that connection", function()
    local srv = H.start(script())
    local neighbour = open(srv)
    local bad, id
    for _ = 1, 20 do                      -- an id of two digits is easy to spot
      bad, id = open(srv)
      if id >= 10 then break end
    end
    assert.are.equal("pong 1", ask(neighbour, "1"))
    assert.are.equal("pong ok", ask(bad, "ok"))
    H.send(bad, "boom\n")
    local err, data = H.read_to_close(bad)
    assert.are.equal("", data)
    assert.truthy(err == "closed" or err == "connection reset by peer", tostring(err))
    srv:expect_log("@@ CLOSE " .. id .. " handler error\n", 3, true)
    assert.are.equal("pong 2", ask(neighbour, "2"))
    local text = srv:stderr()
    assert.are.equal(1, select(2, text:gsub("kaboom%-marker", "")), "error logged more than once:\n" .. text)
    assert.truthy(text:find("stack traceback", 1, true), "no traceback in:\n" .. text)
    local line = H.lines_with(text, "kaboom-marker")[1]
    assert.truthy(line:find(":9:", 1, true) or line:find("script.lua", 1, true), "no script position in: " .. line)
    assert.is_true(H.has_id_token(line, id), "no connection id " .. id .. " in: " .. line)
  end)

  it("on_error can keep the connection open", function()
    local srv = H.start(script([[
  on_error = function(conn, err)
    local first = tostring(err):match("[^\n]*")
    io.stderr:write("@@ ONERR ", conn.id, " ", tostring(tostring(err):find("stack traceback", 1, true) ~= nil), " ", first, "\n")
    conn:send("recovered\n")
  end,]]))
    local c, id = open(srv)
    H.send(c, "boom\n")
    assert.are.equal("recovered", H.line(c))
    assert.are.equal("pong after", ask(c, "after"))
    local tb, first = srv:expect_log("@@ ONERR " .. id .. " (%S+) ([^\n]*)\n")
    assert.are.equal("true", tb, "err passed to on_error has no traceback")
    assert.truthy(first:find("kaboom-marker", 1, true), first)
    assert.is_nil(srv:stderr():find("@@ CLOSE " .. id .. " ", 1, true))
    assert.are.equal("errors 1 timeouts 0", ask(c, "stats"))
  end)

  it("a runaway handler is stopped by handler_budget and the neighbour is served", function()
    local srv = H.start(script("handler_budget = 50,"))
    local neighbour = open(srv)
    local bad, id = open(srv)
    H.send(bad, "spin\n")
    stopped(srv, bad, id)
    assert.are.equal("pong n", ask(neighbour, "n"))
    local st = ask(neighbour, "stats")
    assert.truthy(st:match(" timeouts 1$"), "handler_timeouts not counted: " .. st)
  end)

  it("pcall cannot swallow the handler budget", function()
    local srv = H.start(script("handler_budget = 50,"))
    local neighbour = open(srv)
    local bad, id = open(srv)
    H.send(bad, "pspin\n")
    stopped(srv, bad, id)
    assert.are.equal("pong m", ask(neighbour, "m"))
  end)

  it("a handler that returns pcall(spin) as a tail call is still stopped and counted", function()
    local srv = H.start(script("handler_budget = 50,"))
    local neighbour = open(srv)
    local bad, id = open(srv)
    H.send(bad, "tailspin\n")
    stopped(srv, bad, id)
    local st = ask(neighbour, "stats")
    assert.truthy(st:match(" timeouts 1$"), "handler_timeouts not counted: " .. st)
  end)

  -- The budget's signal arms a count hook once the deadline passes; arming
  -- it again on every signal would restart the count, and a loop of slow C
  -- calls (a few instructions per 5 ms) would never reach it.
  it("a loop whose every turn is a slow call into C is stopped by handler_budget", function()
    local srv = H.start(script("handler_budget = 50,"))
    local neighbour = open(srv)
    local bad, id = open(srv)
    H.send(bad, "slowloop\n")
    stopped(srv, bad, id, 20)
    assert.are.equal("pong s", ask(neighbour, "s"))
  end)

  -- A call's deadline counts from its start: time blocked in a system call
  -- (no CPU, so no look by the budget's timer) counts once Lua runs again.
  it("a handler blocked past its budget in a system call is stopped when it runs Lua again", function()
    local srv = H.start(script("handler_budget = 100,"))
    local c, id = open(srv)
    H.send(c, "sleepspin\n")
    stopped(srv, c, id)
  end)

  -- The budget's timer signals SIGPROF; a mask that blocks it, inherited from
  -- whoever started the server, must not silence it.
  it("handler_budget holds when the server was started with SIGPROF blocked", function()
    local block = "perl -MPOSIX -e 'sigprocmask(SIG_BLOCK, POSIX::SigSet->new(SIGPROF)) or die; exec @ARGV or die'"
    local srv = H.start(script("handler_budget = 50,"), { wrap = block })
    local neighbour = open(srv)
    local bad, id = open(srv)
    H.send(bad, "spin\n")
    stopped(srv, bad, id)
    assert.are.equal("pong b", ask(neighbour, "b"))
  end)

  -- As documented in docs/limits.md: the stop comes between Lua
  -- instructions, 1000 after the deadline passed, so a handler that passed
  -- it inside one long call into C and then ends is not cut off.
  it("a handler that passes its budget inside one call into C and then ends is let be", function()
    local srv = H.start(script("handler_budget = 10,")) -- a 16 MiB string.rep takes longer
    local c, id = open(srv)
    assert.are.equal("made 16777216", ask(c, "onelong"))
    assert.are.equal("pong after", ask(c, "after"))
    assert.is_nil(srv:stderr():find("@@ CLOSE " .. id .. " ", 1, true))
  end)

  it("the conn metatable is out of a script's reach: getmetatable is protected, debug.getmetatable refused", function()
    local srv = H.start(script())
    local c = open(srv)
    assert.are.equal("mt hotsock.conn false not available", ask(c, "mt"))
    assert.are.equal("pong 1", ask(c, "1"))
  end)

  it("a script cannot remove the budget hook with debug.sethook", function()
    local srv = H.start(script("handler_budget = 50,"))
    local c = open(srv)
    assert.are.equal("sethook false not available", ask(c, "unhook"))
    H.send(c, "spin\n")
    local err = H.read_to_close(c, 5)
    assert.truthy(err == "closed" or err == "connection reset by peer", tostring(err))
  end)

  it("a module with a strict __index (raising on missing names) loads, serves and reloads", function()
    local src = [[
local M = {
  framing = "line",
  on_message = function(conn, line) conn:send("strict ", line, "\n") end,
}
return setmetatable(M, { __index = function(_, k) error("no field " .. tostring(k)) end })
]]
    local srv = H.start(src)
    local c = srv:connect()
    assert.are.equal("strict a", ask(c, "a"))
    -- on_frame_error, on_drain... are looked up raw: absent, not an error
    H.send(c, ("x"):rep(70000))
    local err = H.read_to_close(c)
    assert.truthy(err == "closed" or err == "connection reset by peer", tostring(err))
    srv:signal("HUP")
    srv:expect_log("reloaded")
    c = srv:connect()
    assert.are.equal("strict b", ask(c, "b"))
    assert.is_nil(srv:stderr():find("no field", 1, true))
  end)

  it("a listen list with a raising __len is read raw, not called", function()
    local script = H.write_script([[
return {
  listen = setmetatable({ "127.0.0.1:0" }, { __len = function() error("strict") end }),
  on_message = function() end,
}
]])
    local rc, out, err = H.run({ "--check", script })
    assert.are.equal(0, rc, out .. err)
  end)

  it("a setting one or two edits from a real one is a typo, with a suggestion; a script's own fields are not", function()
    local cases = {
      { "framming = 'line'", "unknown setting \"framming\" (did you mean framing?)" },
      { "max_clinets = 10", "unknown setting \"max_clinets\" (did you mean max_clients?)" },
      { "timeout = { idle = 1 }", "unknown setting \"timeout\" (did you mean timeouts?)" },
      { "listn = 7000", "unknown setting \"listn\" (did you mean listen?)" },
    }
    for _, c in ipairs(cases) do
      local script = H.write_script("return { " .. c[1] .. ", on_message = function() end }")
      local rc, out, err = H.run({ "--check", script })
      assert.are.equal(2, rc, c[1] .. ": " .. out .. err)
      assert.truthy(err:find(c[2], 1, true), err)
    end
    -- the script's own fields: a function close to a setting's name, and
    -- names far from every setting
    local ok = H.write_script([[
return {
  listens = function() end,
  greeting = "hello",
  counters = {},
  on_message = function() end,
}
]])
    local rc, out, err = H.run({ "--check", ok })
    assert.are.equal(0, rc, out .. err)
  end)

  it("an error in a timer is logged with a traceback and an every timer keeps running", function()
    local srv = H.start([[
local hs = require "hotsock"
local n = 0
hs.shared.n = 0
return {
  framing = "line",
  on_connect = function(conn)
    local t
    t = hs.every(20, function()
      n = n + 1
      if n == 2 then error("timer-marker") end
      if n == 5 then t:cancel(); conn:send("ticks ", tostring(n), "\n") end
    end)
  end,
  on_message = function(conn, line) conn:send(line, "\n") end,
}
]])
    local c = srv:connect()
    assert.are.equal("ticks 5", H.line(c))
    local text = srv:stderr()
    assert.are.equal(1, select(2, text:gsub("timer%-marker", "")), text)
    assert.truthy(text:find("stack traceback", 1, true), text)
    assert.are.equal("x", ask(c, "x"))
  end)
end)
