package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local function closed_ok(err)
  return err == "closed" or err == "connection reset by peer"
end

-- line echo with a configurable top, logging on_close reasons
local function script(top, handlers)
  return ([[
local hs = require "hotsock"
return {
  framing = "line",
  %s
  on_connect = function(conn) conn:send("id ", tostring(conn.id), "\n") end,
  on_message = function(conn, line)
    local n = line:match("^idle (%%d+)$")
    if n then
      conn:settimeouts({ idle = tonumber(n) })
      conn:send("set\n")
    elseif line == "pause" then
      conn:pause()
      conn:send("paused\n")
    elseif line == "stats" then
      local s = hs.stats()
      conn:send("timeouts=", tostring(s.timeouts), " outbuf_disconnects=", tostring(s.outbuf_disconnects), "\n")
    else
      conn:send("echo ", line, "\n")
    end
  end,
  %s
  on_close = function(conn, reason) io.stderr:write("@@ CLOSE ", conn.id, " ", reason, "\n") end,
}
]]):format(top or "", handlers or "")
end

local function open(srv)
  local c = srv:connect()
  local l = assert(H.line(c))
  return c, assert(tonumber(l:match("^id (%d+)$")), l)
end

describe("limits and timeouts", function()
  after_each(H.cleanup)

  it("an idle connection is closed with 'idle timeout'", function()
    local srv = H.start(script("timeouts = { idle = 200 },"))
    local other = open(srv)
    local c, id = open(srv)
    local t0 = socket.gettime()
    local err = H.read_to_close(c, 4)
    local dt = socket.gettime() - t0
    assert.truthy(closed_ok(err), tostring(err))
    assert.is_true(dt >= 0.15 and dt < 2, "closed after " .. dt .. " s")
    srv:expect_log("@@ CLOSE " .. id .. " idle timeout\n", 3, true)
    other:close()
  end)

  it("traffic keeps an idle timeout from firing", function()
    local srv = H.start(script("timeouts = { idle = 250 },"))
    local c, id = open(srv)
    for i = 1, 6 do
      socket.sleep(0.1)
      H.send(c, "k" .. i .. "\n")
      assert.are.equal("echo k" .. i, H.line(c))
    end
    assert.is_nil(srv:stderr():find("@@ CLOSE " .. id .. " ", 1, true))
  end)

  it("conn:settimeouts changes one connection's timeouts", function()
    local srv = H.start(script())
    local keep = open(srv)
    local c, id = open(srv)
    H.send(c, "idle 150\n")
    assert.are.equal("set", H.line(c))
    local err = H.read_to_close(c, 4)
    assert.truthy(closed_ok(err), tostring(err))
    srv:expect_log("@@ CLOSE " .. id .. " idle timeout\n", 3, true)
    H.send(keep, "still\n")
    assert.are.equal("echo still", H.line(keep))
  end)

  it("a frame that does not complete in time is closed with 'frame timeout' (slowloris)", function()
    local srv = H.start(script("timeouts = { frame = 200 },"))
    local c, id = open(srv)
    H.send(c, "never ends")
    local err = H.read_to_close(c, 4)
    assert.truthy(closed_ok(err), tostring(err))
    srv:expect_log("@@ CLOSE " .. id .. " frame timeout\n", 3, true)
  end)

  it("a read timeout closes a client that sends nothing, even while the server writes", function()
    local srv = H.start((script("timeouts = { read = 250 },", [[
  on_drain = function(conn) end,
]]):gsub('conn:send%("id ", tostring%(conn.id%), "\\n"%)',
      'conn:send("id ", tostring(conn.id), "\\n"); local t; t = hs.every(50, function() if conn.closed then t:cancel() else conn:send("tick\\n") end end)')))
    local c, id = open(srv)
    local err = H.read_to_close(c, 4)
    assert.truthy(closed_ok(err), tostring(err))
    srv:expect_log("@@ CLOSE " .. id .. " read timeout\n", 3, true)
  end)

  it("on_timeout gets the timeout and the connection stays open", function()
    local srv = H.start(script("timeouts = { idle = 150 },", [[
  on_timeout = function(conn, which)
    if not conn.warned then
      conn.warned = true
      conn:send("timeout ", which, "\n")
    end
  end,
]]))
    local c, id = open(srv)
    assert.are.equal("timeout idle", H.line(c))
    H.send(c, "still here\n")
    assert.are.equal("echo still here", H.line(c))
    assert.is_nil(srv:stderr():find("@@ CLOSE " .. id .. " ", 1, true))
  end)

  it("receive returns nil, 'timeout', partial on a read timeout and the connection stays open", function()
    local srv = H.start([[
local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
return {
  timeouts = { read = 200 },
  handle = function(conn)
    conn:send("ready\n")
    for _ = 1, 2 do
      local l, err, partial = conn:receive("*l")
      conn:send("R ", tostring(l), " ", tostring(err), " [", hex(partial or ""), "]\n")
    end
  end,
}
]])
    local c = srv:connect()
    assert.are.equal("ready", H.line(c))
    H.send(c, "par")
    assert.are.equal("R nil timeout [" .. H.hex("par") .. "]", H.line(c))
    H.send(c, "xyz\n")
    assert.are.equal("R xyz nil []", H.line(c))
  end)

  it("a client that never reads is cut off with 'output buffer full'", function()
    local srv = H.start((script("max_outbuf = 1048576,", [[
  on_drain = function(conn) end,
]]):gsub('elseif line == "pause" then', [[elseif line == "flood" then
      local chunk = string.rep("f", 256 * 1024)
      local n, t = 0
      t = hs.every(5, function()
        n = n + 1
        if conn.closed or n > 400 then t:cancel() return end
        local ok, err = conn:send(chunk)
        if not ok then
          io.stderr:write("@@ SENDFAIL ", conn.id, " ", tostring(err), "\n")
          t:cancel()
        end
      end)
    elseif line == "pause" then]])))
    local watcher = open(srv)
    local c, id = open(srv)
    H.send(c, "flood\n")
    srv:expect_log("@@ CLOSE " .. id .. " output buffer full\n", 8, true)
    assert.truthy(srv:wait_log("@@ SENDFAIL " .. id .. " ", 1, true), "send did not return nil, err")
    H.send(watcher, "stats\n")
    assert.truthy(H.line(watcher):match("outbuf_disconnects=1$"))
  end)

  it("unframed input over max_inbuf closes with 'input too large'", function()
    local srv = H.start(script("max_inbuf = 65536, max_frame = 1048576,"))
    local keep = open(srv)
    local c, id = open(srv)
    local big = string.rep("i", 200 * 1024)
    c:settimeout(3)
    c:send(big)                                   -- may fail once closed
    local err = H.read_to_close(c, 4)
    assert.truthy(closed_ok(err), tostring(err))
    srv:expect_log("@@ CLOSE " .. id .. " input too large\n", 3, true)
    H.send(keep, "fine\n")
    assert.are.equal("echo fine", H.line(keep))
  end)

  it("a peer reset is reported as 'reset'", function()
    local srv = H.start(script())
    local c, id = open(srv)
    c:setoption("linger", { on = true, timeout = 0 })
    c:close()
    srv:expect_log("@@ CLOSE " .. id .. " reset\n", 3, true)
  end)

  it("--max-frame on the command line wins over the module", function()
    local srv = H.start(script("max_frame = 100000,"), { args = { "--max-frame", "16" } })
    local keep = open(srv)
    local c, id = open(srv)
    H.send(c, string.rep("m", 100) .. "\n")
    local err = H.read_to_close(c)
    assert.truthy(closed_ok(err), tostring(err))
    srv:expect_log("@@ CLOSE " .. id .. " frame too large\n", 3, true)
    H.send(keep, string.rep("k", 16) .. "\n")
    assert.are.equal("echo " .. string.rep("k", 16), H.line(keep))
  end)

  it("--max-clients on the command line wins over the module", function()
    local srv = H.start(script("max_clients = 100,"), { args = { "--max-clients", "1" } })
    local a = open(srv)
    local b = srv:connect()
    local err, data = H.read_to_close(b)
    assert.are.equal("", data)
    assert.truthy(closed_ok(err), tostring(err))
    H.send(a, "ok\n")
    assert.are.equal("echo ok", H.line(a))
  end)
  it("a client that stops reading is closed with 'write timeout'", function()
    local srv = H.start([[
return {
  framing = "line",
  max_outbuf = 64 * 1024 * 1024,
  timeouts = { write = 300 },
  on_message = function(conn, line)
    conn:send(string.rep(string.rep("w", 1024), 16 * 1024)) -- 16 MiB, 1 KiB at a time
  end,
  on_close = function(conn, reason) io.stderr:write("@@ CLOSE ", conn.id, " ", reason, "\n") end,
}
]])
    local c = srv:connect()
    H.send(c, "go\n")
    srv:expect_log("@@ CLOSE %d+ write timeout\n", 4)
  end)

  it("survives running out of file descriptors on accept", function()
    local srv = H.start([[
return {
  framing = "line",
  on_message = function(conn, line) conn:send(line, "\n") end,
}
]], { nofile = 40 })
    local clients = {}
    for i = 1, 60 do clients[i] = srv:connect() end
    for i, c in ipairs(clients) do c:send("c" .. i .. "\n") end
    -- collect whatever comes back within a second
    local served, gone = 0, 0
    local pending = {}
    for _, c in ipairs(clients) do pending[#pending + 1] = c end
    local deadline = socket.gettime() + 1
    while #pending > 0 and socket.gettime() < deadline do
      local readable = socket.select(pending, nil, 0.1)
      local rest = {}
      for _, c in ipairs(pending) do
        if readable[c] then
          c:settimeout(0.5)
          local l = c:receive("*l")
          if l then served = served + 1 else gone = gone + 1 end
        else
          rest[#rest + 1] = c
        end
      end
      pending = rest
    end
    assert.is_true(served >= 15, "only " .. served .. " clients served")
    for _, c in ipairs(clients) do c:close() end
    socket.sleep(0.3)
    local ok = H.wait_until(function()
      local c = H.connect_addr(srv.addrs[1], 1)
      if not c then return false end
      c:send("again\n")
      local l = c:receive("*l")
      c:close()
      return l == "again"
    end, 4, 0.1)
    assert.truthy(ok, "not serving after the descriptors came back")
    assert.is_false(srv:exited(), "server died")
    local n = 0
    for line in srv:stderr():lower():gmatch("[^\n]*open files[^\n]*") do n = n + 1 end
    assert.is_true(n <= 4, "EMFILE logged " .. n .. " times")
  end)
end)

-- Each limit's command-line flag wins over the module's field, and its trip
-- is counted.
describe("limits set on the command line", function()
  after_each(H.cleanup)

  local CLI_SCRIPT = [[
local hs = require "hotsock"
return {
  framing = "line",
  --TOP--
  on_connect = function(conn) conn:send("id ", tostring(conn.id), "\n") end,
  on_message = function(conn, line)
    if line == "stats" then
      local s, out = hs.stats(), {}
      for _, k in ipairs({ "closed", "handler_errors", "handler_timeouts", "oversize_frames",
          "outbuf_disconnects", "timeouts" }) do
        out[#out + 1] = k .. "=" .. tostring(s[k])
      end
      conn:send(table.concat(out, " "), "\n")
    elseif line == "spin" then            -- one second of CPU, then an answer
      local t = os.clock()
      while os.clock() - t < 1 do end
      conn:send("finished\n")
    elseif line == "alloc" then           -- 64 MiB at once
      local s = string.rep("x", 64 * 1024 * 1024)
      conn:send("made ", #s, "\n")
    elseif line:match("^big %d+$") then
      local n = tonumber(line:match("%d+")) -- in 1 KiB pieces: one byte at a time is over the budget
      conn:send(string.rep(string.rep("w", 1024), n // 1024), string.rep("w", n % 1024))
    else
      conn:send("echo ", #line, "\n")
    end
  end,
  on_close = function(conn, reason) io.stderr:write("@@ CLOSE ", conn.id, " ", reason, "\n") end,
}
]]
  local function cli_script(top)
    return (CLI_SCRIPT:gsub("%-%-TOP%-%-", function() return top end))
  end
  local function stats_line(c)
    H.send(c, "stats\n")
    return assert(H.line(c))
  end
  local ZERO = "closed=0 handler_errors=0 handler_timeouts=0 oversize_frames=0 " ..
    "outbuf_disconnects=0 timeouts=0"

  it("the default max_frame is 65536: a line of that length is served, one byte more closes", function()
    local srv = H.start(cli_script(""))
    local keep = open(srv)
    local c, id = open(srv)
    H.send(c, string.rep("d", 65536) .. "\n")
    assert.are.equal("echo 65536", H.line(c))
    H.send(c, string.rep("d", 65537) .. "\n")
    local err = H.read_to_close(c)
    assert.truthy(closed_ok(err), tostring(err))
    srv:expect_log("@@ CLOSE " .. id .. " frame too large\n", 3, true)
    assert.are.equal("closed=1 handler_errors=0 handler_timeouts=0 oversize_frames=1 " ..
      "outbuf_disconnects=0 timeouts=0", stats_line(keep))
  end)

  it("--max-inbuf wins over the module", function()
    local srv = H.start(cli_script("max_inbuf = 1048576, max_frame = 1048576,"),
      { args = { "--max-inbuf", "4096" } })
    local keep = open(srv)
    assert.are.equal(ZERO, stats_line(keep))
    local c, id = open(srv)
    H.send(c, string.rep("i", 3000) .. "\n")
    assert.are.equal("echo 3000", H.line(c))
    c:send(string.rep("i", 5000))
    local err = H.read_to_close(c)
    assert.truthy(closed_ok(err), tostring(err))
    srv:expect_log("@@ CLOSE " .. id .. " input too large\n", 3, true)
    H.send(keep, "k\n")
    assert.are.equal("echo 1", H.line(keep))
  end)

  it("--max-outbuf wins over the module", function()
    local srv = H.start(cli_script("max_outbuf = 67108864,"), { args = { "--max-outbuf", "262144" } })
    local keep = open(srv)
    local c, id = open(srv)
    H.send(c, "big 33554432\n")                   -- 32 MiB it does not read
    srv:expect_log("@@ CLOSE " .. id .. " output buffer full\n", 5, true)
    assert.are.equal("closed=1 handler_errors=0 handler_timeouts=0 oversize_frames=0 " ..
      "outbuf_disconnects=1 timeouts=0", stats_line(keep))
  end)

  it("--handler-budget wins over the module", function()
    local srv = H.start(cli_script("handler_budget = 5000,"), { args = { "--handler-budget", "50" } })
    local keep = open(srv)
    local c, id = open(srv)
    H.send(c, "spin\n")
    local err, data = H.read_to_close(c, 5)
    assert.are.equal("", data)
    assert.truthy(closed_ok(err), tostring(err))
    srv:expect_log("@@ CLOSE " .. id .. " handler timeout\n", 3, true)
    assert.are.equal("closed=1 handler_errors=1 handler_timeouts=1 oversize_frames=0 " ..
      "outbuf_disconnects=0 timeouts=0", stats_line(keep))
  end)

  it("--timeout wins over the module, and 0 turns a timeout off", function()
    local srv = H.start(cli_script("timeouts = { idle = 600000, frame = 100 },"),
      { args = { "--timeout", "idle=150", "--timeout", "frame=0" } })
    local c, id = open(srv)
    H.send(c, "partial line, never finished")   -- frame=0: no frame timeout
    srv:expect_log("@@ CLOSE " .. id .. " idle timeout\n", 5, true)
    assert.is_nil(srv:stderr():find("frame timeout", 1, true))
  end)

  it("--timeout refuses an unknown name or a bad number", function()
    for _, bad in ipairs({ "slow=1", "idle", "idle=", "idle=-5", "idle= -5", "idle=5x",
                           "idle=1,,frame=2", "idle=18446744073709551000", "idle=315360000001" }) do
      local rc, _, err = H.run({ "--timeout", bad, H.root .. "/examples/echo.lua" })
      assert.are.equal(2, rc, bad)
      assert.truthy(err:find("--timeout takes NAME=MS", 1, true), err)
    end
    local rc = H.run({ "--check", "--timeout", "idle=5,read=0,write=10,frame=20", H.root .. "/examples/echo.lua" })
    assert.are.equal(0, rc)
    -- the same bound for the other times, on the command line and in the module
    for _, args in ipairs({ { "--handler-budget", "315360000001" }, { "--drain-timeout", " 5" },
                            { "--max-frame", " -5" } }) do
      rc = H.run({ args[1], args[2], H.root .. "/examples/echo.lua" })
      assert.are.equal(2, rc, table.concat(args, " "))
    end
    local script = H.write_script([[return { on_message = function() end, timeouts = { idle = 315360000001 } }]])
    local err
    rc, _, err = H.run({ "--check", script })
    assert.are.equal(2, rc) -- --check: a bad script exits 2
    assert.truthy(err:find("timeouts.idle must be at most", 1, true), err)
  end)

  it("--max-lua-memory wins over the module", function()
    local srv = H.start(cli_script("max_lua_memory = 268435456, handler_budget = 10000,"),
      { args = { "--max-lua-memory", "33554432" } })
    local keep = open(srv)
    local c, id = open(srv)
    H.send(c, "alloc\n")
    local err, data = H.read_to_close(c, 10)
    assert.are.equal("", data)
    assert.truthy(closed_ok(err), tostring(err))
    srv:expect_log("@@ CLOSE " .. id .. " handler error\n", 3, true)
    assert.truthy(srv:stderr():find("not enough memory", 1, true))
    assert.are.equal("closed=1 handler_errors=1 handler_timeouts=0 oversize_frames=0 " ..
      "outbuf_disconnects=0 timeouts=0", stats_line(keep))
  end)
end)

describe("the Lua heap cap between calls", function()
  after_each(H.cleanup)

  it("a heap filled to max_lua_memory does not end the process on a frame error or a close", function()
    local srv = H.start([[
local t, n = {}, 0
for i = 1, 60000 do t[i] = false end -- slots: storing into them allocates nothing
local function fill(size)
  while n < #t do
    local ok, s = pcall(string.rep, "x", size)
    if not ok then return end
    n = n + 1
    t[n] = s
  end
end
local k, last = 0, nil
local function fill_short()
  while n < #t do
    k = k + 1
    local ok, s = pcall(string.format, "%d", k)
    if not ok then return end
    n = n + 1
    t[n] = s
  end
end
return {
  framing = "resp",
  max_lua_memory = 4 * 1024 * 1024,
  on_message = function(conn, cmd)
    last = cmd -- kept: an emergency collection must not find garbage to free
    if cmd[1] == "FILL" then
      conn:send("+filling\r\n")
      for _, size in ipairs({ 65536, 4096, 256, 64, 41 }) do fill(size) end
      collectgarbage()
      fill(41); fill_short(); collectgarbage(); fill_short()
    elseif cmd[1] == "PING" then
      conn:send("+PONG\r\n")
    end
  end,
  on_frame_error = function(conn, why) conn:send("-ERR ", why, "\r\n") end,
}
]])
    local c = srv:connect()
    H.send(c, "FILL\r\n")
    assert.are.equal("+filling", H.line(c))
    H.send(c, '"unbalanced\r\n')          -- frame_error at the cap
    H.line(c)                               -- an answer, or the close
    local other = srv:connect()             -- a new connection's box at the cap
    other:close()                           -- and its close
    H.sleep(0.2)
    assert.is_false(srv:exited(), srv:stderr())
    local d = srv:connect()
    H.send(d, "PING\r\n")
    H.line(d) -- PONG, or closed for want of room
    H.sleep(0.1)
    assert.is_false(srv:exited(), srv:stderr())
  end)
end)
