-- The C core's contract with scripts: host functions from any coroutine,
-- coroutines only the host resumes, a stop that ends every connection and
-- the process, on_close never nested in another handler, nothing a script
-- runs escaping the handler budget, host cut-offs that are not script
-- errors, a first-byte timeout, host memory under max_lua_memory, and
-- os.exit / warn going through the host.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local function closed_ok(err)
  return err == "closed" or err == "connection reset by peer"
end

-- Read a line; when none comes, stop the server at once (SIGKILL by PID,
-- so that a hung server does not also cost the helper's 8 s stop) and fail
-- with the tail of its stderr.
local function fail_kill(srv, msg, level)
  local rc = srv:exit_code() or srv:wait_exit(0.5) -- a crash: let its exit code arrive
  local log = srv:stderr()
  srv:kill()
  srv.stopped = true
  local rep = H.sanitizer_report(log)
  error(("%s\n(server %s)\nstderr:\n%s"):format(msg,
    rc and ("exited with code " .. rc) or "still running; killed",
    rep or log:sub(-2000)), (level or 1) + 1)
end

local function must_line(srv, c, what)
  local l, err = H.line(c)
  if not l then fail_kill(srv, ("%s: no line (%s)"):format(what or "line", tostring(err)), 2) end
  return l
end

-- Like srv:expect_log, but kills a server that never logged it.
local function must_log(srv, pattern, timeout, plain)
  local r = table.pack(srv:wait_log(pattern, timeout, plain))
  if r[1] == nil then
    fail_kill(srv, ("expected stderr to match %q within %.1fs"):format(pattern, timeout or 3), 2)
  end
  return table.unpack(r, 1, r.n)
end

-- "3,1,2" or {3, 1, 2} -> "1,2,3"
local function sorted_ids(list)
  local t = {}
  if type(list) == "string" then
    for v in list:gmatch("%d+") do t[#t + 1] = tonumber(v) end
  else
    for _, v in ipairs(list) do t[#t + 1] = tonumber(v) end
  end
  table.sort(t)
  for i, v in ipairs(t) do t[i] = tostring(v) end
  return table.concat(t, ",")
end

local ECHO_UPSTREAM = [[
return {
  framing = "raw",
  on_message = function(conn, data) conn:send(data) end,
}
]]

---------------------------------------------------------------------------
-- 1. host functions from any coroutine
---------------------------------------------------------------------------

local CORO_HOST = [[
local hs = require "hotsock"
return {
  handle = function(conn)
    conn:send("id ", tostring(conn.id), "\n")
    while true do
      local line = conn:receive("*l")
      if not line then return end
      if line == "count" then
        local n, ids = 0, {}
        for c in hs.clients() do n = n + 1; ids[#ids + 1] = tostring(c.id) end
        conn:send("count ", tostring(n), " ", table.concat(ids, ","), "\n")
      elseif line:sub(1, 3) == "bc " then
        local sent = hs.broadcast(line:sub(4) .. "\n", conn)
        conn:send("sent ", tostring(sent), "\n")
      else
        conn:send("echo ", line, "\n")
      end
    end
  end,
}
]]

local EVENT_WRAP_HOST = [[
local hs = require "hotsock"
return {
  framing = "line",
  on_connect = function(conn) conn:send("id ", tostring(conn.id), "\n") end,
  on_message = function(conn, line)
    if line == "count" then
      coroutine.wrap(function()
        local n, ids = 0, {}
        for c in hs.clients() do n = n + 1; ids[#ids + 1] = tostring(c.id) end
        conn:send("count ", tostring(n), " ", table.concat(ids, ","), "\n")
      end)()
    elseif line:sub(1, 3) == "bc " then
      coroutine.wrap(function()
        local sent = hs.broadcast(line:sub(4) .. "\n", conn)
        conn:send("sent ", tostring(sent), "\n")
      end)()
    elseif line:sub(1, 8) == "connect " then
      local port = tonumber(line:sub(9))
      coroutine.wrap(function()
        local up, err = hs.connect("127.0.0.1", port, {
          on_connect = function(u) conn:send("upconnected\n") end,
          on_message = function(u, data) conn:send("upgot ", data, "\n") end,
        })
        conn:send("connect ", type(up), " ", tostring(up), " ", tostring(err), "\n")
        conn.up = up
      end)()
    elseif line:sub(1, 5) == "upsay" then
      conn.up:send(line:sub(7) .. "\n")
    else
      conn:send("echo ", line, "\n")
    end
  end,
}
]]

local function open_id(srv)
  local c = srv:connect()
  local l = must_line(srv, c, "greeting")
  return c, assert(tonumber(l:match("^id (%d+)$")), "bad greeting " .. l)
end

describe("core", function()
  after_each(H.cleanup)

  describe("host functions from any coroutine", function()
    it("hs.clients() inside a handle coroutine yields the live connections", function()
      local srv = H.start(CORO_HOST)
      local a, ida = open_id(srv)
      local _, idb = open_id(srv)
      local _, idc = open_id(srv)
      H.send(a, "count\n")
      local l = must_line(srv, a, "count")
      local n, ids = l:match("^count (%d+) (%S*)$")
      assert.are.equal("3", n, l)
      assert.are.equal(sorted_ids({ ida, idb, idc }), sorted_ids(ids))
      H.send(a, "still\n")
      assert.are.equal("echo still", must_line(srv, a, "echo"))
      assert.are.equal(0, srv:stop())
    end)

    it("hs.broadcast inside a handle coroutine reaches the other clients", function()
      local srv = H.start(CORO_HOST)
      local a = open_id(srv)
      local b = open_id(srv)
      local c = open_id(srv)
      H.send(a, "bc hello all\n")
      assert.are.equal("sent 2", must_line(srv, a, "sent"))
      assert.are.equal("hello all", must_line(srv, b, "broadcast at b"))
      assert.are.equal("hello all", must_line(srv, c, "broadcast at c"))
      H.send(b, "still\n")
      assert.are.equal("echo still", must_line(srv, b, "echo"))
      assert.are.equal(0, srv:stop())
    end)

    it("hs.clients() and hs.broadcast work inside coroutine.wrap in an event handler", function()
      local srv = H.start(EVENT_WRAP_HOST)
      local a, ida = open_id(srv)
      local b, idb = open_id(srv)
      H.send(a, "count\n")
      local l = must_line(srv, a, "count")
      local n, ids = l:match("^count (%d+) (%S*)$")
      assert.are.equal("2", n, l)
      assert.are.equal(sorted_ids({ ida, idb }), sorted_ids(ids))
      H.send(a, "bc over wrap\n")
      assert.are.equal("sent 1", must_line(srv, a, "sent"))
      assert.are.equal("over wrap", must_line(srv, b, "broadcast at b"))
      H.send(b, "still\n")
      assert.are.equal("echo still", must_line(srv, b, "echo"))
      assert.are.equal(0, srv:stop())
    end)

    it("hs.connect inside coroutine.wrap in an event handler returns a connection", function()
      local up = H.start(ECHO_UPSTREAM)
      local srv = H.start(EVENT_WRAP_HOST)
      local a = open_id(srv)
      H.send(a, "connect " .. up.port .. "\n")
      local l = must_line(srv, a, "connect")
      local ty, str = l:match("^connect (%S+) (.*) %S+$")
      assert.are.equal("userdata", ty, l)
      assert.truthy(str:match("^conn %d+"), l)
      assert.are.equal("upconnected", must_line(srv, a, "on_connect of the outbound connection"))
      H.send(a, "upsay ping\n")
      assert.are.equal("upgot ping", must_line(srv, a, "reply through the outbound connection"))
      assert.are.equal(0, srv:stop())
    end)
  end)

  ---------------------------------------------------------------------------
  -- 2. only the host resumes a handle coroutine
  ---------------------------------------------------------------------------

  describe("a handle coroutine waiting in receive", function()
    local SCRIPT = [[
local hs = require "hotsock"
local function log(...) io.stderr:write("@@ ", table.concat({ ... }, "|"), "\n") end
return {
  handle = function(conn)
    local mode = conn:receive("*l")
    if mode == "resume" or mode == "closer" then
      local co = coroutine.running()
      hs.after(50, function()
        local ok, err = coroutine.resume(co, "forged", "by a timer")
        log("RESUMED", tostring(conn.id), tostring(ok), tostring(err))
      end)
      conn:send("waiting ", tostring(conn.id), "\n")
      local line, err = conn:receive("*l")
      if mode == "closer" then
        conn:close()
        return
      end
      conn:send("got ", tostring(line), " ", tostring(err), "\n")
      return
    end
    while mode do
      conn:send("echo ", mode, "\n")
      mode = conn:receive("*l")
    end
  end,
}
]]

    it("cannot be resumed by Lua code, and still receives the next line", function()
      local srv = H.start(SCRIPT)
      local c = srv:connect()
      H.send(c, "resume\n")
      local id = assert(must_line(srv, c, "waiting"):match("^waiting (%d+)$"))
      local ok, err = must_log(srv, "@@ RESUMED|" .. id .. "|(%a+)|([^\n]*)\n")
      assert.are.equal("false", ok, "coroutine.resume from a timer must fail")
      assert.truthy(err:lower():find("resume", 1, true), err)
      H.send(c, "real line\n")
      assert.are.equal("got real line nil", must_line(srv, c, "the receive result"))
      assert.are.equal(0, srv:stop())
    end)

    it("a foreign resume that would close the connection does not crash the server", function()
      local srv = H.start(SCRIPT)
      local c = srv:connect()
      H.send(c, "closer\n")
      local id = assert(must_line(srv, c, "waiting"):match("^waiting (%d+)$"))
      local ok = must_log(srv, "@@ RESUMED|" .. id .. "|(%a+)|")
      assert.are.equal("false", ok)
      -- the coroutine still waits: the connection is open
      assert.is_true(H.quiet(c, 0.2), "the connection must still be open and silent")
      local d = srv:connect()
      H.send(d, "ping\n")
      assert.are.equal("echo ping", must_line(srv, d, "second client"))
      H.send(c, "now\n")
      local err = H.read_to_close(c, 3)
      assert.are.equal("closed", err)
      H.send(d, "again\n")
      assert.are.equal("echo again", must_line(srv, d, "second client after the close"))
      assert.are.equal(0, srv:stop())
    end)
  end)

  ---------------------------------------------------------------------------
  -- 3, 4. a stop ends the process and reaches every connection
  ---------------------------------------------------------------------------

  describe("stopping", function()
    it("SIGTERM ends the process while on_close keeps reconnecting; hs.connect returns nil, 'stopping'", function()
      local up = H.start(ECHO_UPSTREAM)
      local srv = H.start([[
local hs = require "hotsock"
local port = tonumber(arg[1])
local n = 0
local link
function link()
  n = n + 1
  local c, err = hs.connect("127.0.0.1", port, {
    on_connect = function(c) hs.log.info("LINK UP " .. tostring(c)) end,
    on_close = function(c, reason) link() end,
  })
  -- log failures always, successes only a few times (a runaway loop must
  -- not fill the disk)
  if not c or n <= 5 then
    hs.log.info("CONNECT RETURNED " .. tostring(c) .. " | " .. tostring(err))
  end
end
return {
  framing = "line",
  on_message = function(conn, line)
    if line == "link" then link() end
    conn:send("ok\n")
  end,
}
]], { args = { "--drain-timeout", "1000" }, script_args = { tostring(up.port) } })
      local c = srv:connect()
      H.send(c, "link\n")
      assert.are.equal("ok", must_line(srv, c, "link"))
      must_log(srv, "LINK UP", 3, true)
      c:close()
      srv:signal("TERM")
      local rc = srv:wait_exit(10)
      if rc == nil then srv:kill() end
      srv.stopped = true
      local log = srv:stderr()
      assert.is_not_nil(rc, "the process did not exit within 10 s of SIGTERM (drain_timeout 1 s)")
      assert.are.equal(0, rc)
      assert.is_nil(H.sanitizer_report(log), H.sanitizer_report(log))
      assert.truthy(log:find("CONNECT RETURNED nil | stopping", 1, true),
        "hs.connect during the stop must return nil, 'stopping'; stderr:\n" .. log:sub(-1500))
    end)

    it("SIGTERM closes every proxied client cleanly and the proxy exits long before drain_timeout", function()
      local up = H.start(ECHO_UPSTREAM)
      local proxy = H.start("examples/proxy.lua", {
        args = { "--drain-timeout", "30000" },
        script_args = { "127.0.0.1:" .. up.port },
      })
      local clients = {}
      for i = 1, 6 do
        local c = proxy:connect()
        H.send(c, "hello " .. i .. "\n")
        assert.are.equal("hello " .. i, must_line(proxy, c, "relayed echo " .. i))
        clients[i] = c
      end
      proxy:signal("TERM")
      local deadline = socket.gettime() + 10
      local errs = {}
      for i, c in ipairs(clients) do
        local left = math.max(0.1, deadline - socket.gettime())
        c:settimeout(left)
        local data, err = H.read_all(c, nil, left)
        errs[i] = tostring(err) .. (data ~= "" and (" after " .. #data .. " bytes") or "")
      end
      local rc = proxy:wait_exit(math.max(0.1, deadline - socket.gettime()))
      if rc == nil then proxy:kill() end
      proxy.stopped = true
      local log = proxy:stderr()
      for i = 1, 6 do
        assert.are.equal("closed", errs[i], "client " .. i .. " did not see a clean close: " .. errs[i])
      end
      assert.is_not_nil(rc, "the proxy did not exit within 10 s of SIGTERM")
      assert.are.equal(0, rc)
      assert.is_nil(H.sanitizer_report(log), H.sanitizer_report(log))
    end)
  end)

  ---------------------------------------------------------------------------
  -- 5. on_close never runs nested inside another handler
  ---------------------------------------------------------------------------

  describe("on_close", function()
    local SCRIPT = [[
local hs = require "hotsock"
local order = {}
local byname = {}
local function log(...) io.stderr:write("@@ ", table.concat({ ... }, " "), "\n") end
return {
  framing = "line",
  --TOP--
  on_message = function(conn, line)
    local cmd, arg = line:match("^(%S+)%s*(.*)$")
    if cmd == "name" then
      conn.name = arg
      byname[arg] = conn
      log("NAMED", arg)
    elseif cmd == "abort" or cmd == "close" then
      local other = byname[arg]
      order[#order + 1] = "begin"
      other[cmd](other)
      order[#order + 1] = "end"
      conn:send("done\n")
    elseif cmd == "bcast" then
      local size = tonumber(arg)
      order[#order + 1] = "begin"
      local sent = hs.broadcast(string.rep("b", size), conn)
      order[#order + 1] = "end"
      conn:send("done ", tostring(sent), "\n")
    elseif cmd == "order" then
      conn:send("order ", table.concat(order, ","), "\n")
    end
  end,
  on_close = function(conn, reason)
    order[#order + 1] = "close " .. tostring(conn.name)
    log("CLOSE", tostring(conn.name), reason)
  end,
}
]]
    local function script(top)
      return (SCRIPT:gsub("%-%-TOP%-%-", function() return top or "" end))
    end

    local function named(srv, name)
      local c = srv:connect()
      H.send(c, "name " .. name .. "\n")
      must_log(srv, "@@ NAMED " .. name .. "\n", 3, true)
      return c
    end

    local function order_after_close(srv, a, name)
      must_log(srv, "@@ CLOSE " .. name .. " ", 3, true)
      H.send(a, "order\n")
      local l = must_line(srv, a, "order")
      return l:match("^order (.*)$")
    end

    for _, how in ipairs({ "abort", "close" }) do
      it(("runs after the handler that called other:%s(), exactly once"):format(how), function()
        local srv = H.start(script())
        local a = named(srv, "A")
        local b = named(srv, "B")
        H.send(a, how .. " B\n")
        assert.are.equal("done", must_line(srv, a, "done"))
        assert.are.equal("begin,end,close B", order_after_close(srv, a, "B"))
        local err = H.read_to_close(b, 3)
        assert.truthy(closed_ok(err), tostring(err))
        socket.sleep(0.1)
        assert.are.equal(1, srv:count_log("@@ CLOSE B ", true), "on_close must run exactly once")
        assert.are.equal(0, srv:stop())
      end)
    end

    it("of a client a broadcast cut off at max_outbuf runs after the broadcasting handler", function()
      local srv = H.start(script("max_outbuf = 65536,"))
      local a = named(srv, "A")
      local b = named(srv, "B") -- never reads
      H.send(a, "bcast " .. (16 * 1024 * 1024) .. "\n")
      assert.truthy(must_line(srv, a, "done"):match("^done %d+$"))
      assert.are.equal("begin,end,close B", order_after_close(srv, a, "B"))
      srv:expect_log("@@ CLOSE B output buffer full\n", 3, true)
      socket.sleep(0.1)
      assert.are.equal(1, srv:count_log("@@ CLOSE B ", true), "on_close must run exactly once")
      b:close()
      assert.are.equal(0, srv:stop())
    end)
  end)

  ---------------------------------------------------------------------------
  -- 6. nothing a script runs escapes the handler budget
  ---------------------------------------------------------------------------

  describe("the handler budget", function()
    local FINALIZERS = [[
return {
  framing = "line",
  on_message = function(conn, line)
    local f = line == "debug" and debug.setmetatable or setmetatable
    local ok, err = pcall(f, {}, { __gc = function() end })
    conn:send(tostring(ok), " ", tostring(err):gsub("\n", " "), "\n")
  end,
}
]]

    it("setmetatable refuses a __gc finalizer written in Lua", function()
      local srv = H.start(FINALIZERS)
      local c = srv:connect()
      H.send(c, "plain\n")
      local l = must_line(srv, c, "setmetatable result")
      assert.are.equal("false", l:match("^(%S+)"), l)
      assert.truthy(l:find("__gc", 1, true), l)
      assert.are.equal(0, srv:stop())
    end)

    it("debug.setmetatable refuses a __gc finalizer written in Lua", function()
      local srv = H.start(FINALIZERS)
      local c = srv:connect()
      H.send(c, "debug\n")
      local l = must_line(srv, c, "debug.setmetatable result")
      assert.are.equal("false", l:match("^(%S+)"), l)
      assert.truthy(l:find("__gc", 1, true), l)
      assert.are.equal(0, srv:stop())
    end)

    local CLOSE_LOOP = [[
return {
  handler_budget = 50,
  handle = function(conn)
    local mode = conn:receive("*l")
    if mode == "error" or mode == "yield" then
      local x <close> = setmetatable({}, { __close = function() while true do end end })
      if mode == "error" then error("boom") end
      coroutine.yield()
      return
    end
    conn:send("echo ", tostring(mode), "\n")
  end,
}
]]
    for _, how in ipairs({ "error", "yield" }) do
      it(("a to-be-closed variable that loops forever in an abandoned handle (%s) does not hang the server"):format(how),
        function()
          local srv = H.start(CLOSE_LOOP)
          local a = srv:connect()
          H.send(a, how .. "\n")
          local err = H.read_to_close(a, 3)
          if not closed_ok(err) then fail_kill(srv, "the first client was not closed: " .. tostring(err)) end
          local b = srv:connect()
          H.send(b, "ping\n")
          assert.are.equal("echo ping", must_line(srv, b, "second client"))
          assert.are.equal(0, srv:stop())
        end)
    end
  end)

  ---------------------------------------------------------------------------
  -- 7. a connection the host cut off is not a script error
  ---------------------------------------------------------------------------

  describe("coroutine style after the host cut a connection off", function()
    local SCRIPT = [[
local hs = require "hotsock"
local function log(...) io.stderr:write("@@ ", table.concat({ ... }, "|"), "\n") end
return {
  max_outbuf = 65536,
  handle = function(conn)
    local mode = conn:receive("*l")
    if mode == "flood" then
      local chunk = string.rep("x", 65536)
      local ok, err
      for i = 1, 1000 do
        ok, err = conn:send(chunk)
        if not ok then break end
        if i % 8 == 0 then hs.sleep(1) end
      end
      log("CUT", tostring(ok), tostring(err))
      local ok2, err2 = conn:send("more")
      log("SEND2", tostring(ok2), tostring(err2))
      local l, err3 = conn:receive("*l")
      log("RECV", tostring(l), tostring(err3))
    elseif mode == "lenclose" then
      local t = setmetatable({ "a", "b" }, { __len = function() conn:close() return 2 end })
      local ok, err = conn:send(t)
      local ok2, err2 = pcall(conn.send, conn, "x")
      log("LEN", tostring(ok), tostring(err), tostring(ok2), tostring(err2))
    elseif mode == "stats" then
      local s = hs.stats()
      conn:send("handler_errors=", tostring(s.handler_errors),
        " outbuf_disconnects=", tostring(s.outbuf_disconnects), "\n")
    end
  end,
}
]]

    it("send and receive return nil, reason after a max_outbuf cut, with no handler error", function()
      local srv = H.start(SCRIPT)
      local f = srv:connect()
      H.send(f, "flood\n") -- and never read
      local cut = must_log(srv, "@@ CUT|([^\n]*)\n", 5)
      assert.truthy(cut:match("^nil|"), cut)
      local s2 = must_log(srv, "@@ SEND2|([^\n]*)\n", 3)
      assert.truthy(s2:match("^nil|%S"), "send after the cut must return nil, reason: " .. s2)
      local r = must_log(srv, "@@ RECV|([^\n]*)\n", 3)
      assert.truthy(r:match("^nil|%S"), "receive after the cut must return nil, reason: " .. r)
      local s = srv:connect()
      H.send(s, "stats\n")
      assert.are.equal("handler_errors=0 outbuf_disconnects=1", must_line(srv, s, "stats"))
      f:close()
      assert.are.equal(0, srv:stop())
    end)

    it("send of a table whose __len closes the connection returns nil, 'closed'", function()
      local srv = H.start(SCRIPT)
      local c = srv:connect()
      H.send(c, "lenclose\n")
      local ok, err, ok2, err2 = must_log(srv, "@@ LEN|([^|]*)|([^|]*)|([^|]*)|([^\n]*)\n", 3)
      assert.are.equal("nil", ok, "send must not return true for a connection closed under it")
      assert.are.equal("closed", err)
      -- a method on a connection the script closed itself still raises
      assert.are.equal("false", ok2)
      assert.truthy(err2:find("attempt to use a closed connection", 1, true), err2)
      assert.are.equal(0, srv:stop())
    end)
  end)

  ---------------------------------------------------------------------------
  -- 8. the first-byte timeout
  ---------------------------------------------------------------------------

  describe("the first-byte timeout", function()
    local SCRIPT = [[
local hs = require "hotsock"
return {
  framing = "raw",
  --TOP--
  on_connect = function(conn)
    io.stderr:write("@@ OPEN ", tostring(conn.id), " ", tostring(conn.peer_port), "\n")
  end,
  on_message = function(conn, data)
    if data:find("stats", 1, true) then
      conn:send("timeouts=", tostring(hs.stats().timeouts), "\n")
    else
      conn:send(data)
    end
  end,
  on_close = function(conn, reason)
    io.stderr:write("@@ CLOSE ", tostring(conn.id), " ", reason, "\n")
  end,
}
]]
    local function script(top)
      return (SCRIPT:gsub("%-%-TOP%-%-", function() return top or "" end))
    end

    local function id_of(srv, c)
      local _, port = c:getsockname()
      return must_log(srv, "@@ OPEN (%d+) " .. port .. "\n", 3)
    end

    it("closes a client that never sends a byte with 'first_byte timeout'", function()
      local srv = H.start(script("timeouts = { first_byte = 300 },"))
      local silent = srv:connect()
      local sid = id_of(srv, silent)
      local talker = srv:connect()
      H.send(talker, "x") -- one byte
      assert.are.equal("x", talker:receive(1))
      local err = H.read_to_close(silent, 5)
      assert.truthy(closed_ok(err), "the silent client was not closed: " .. tostring(err))
      must_log(srv, "@@ CLOSE " .. sid .. " first_byte timeout\n", 3, true)
      socket.sleep(0.5) -- the talker has been quiet for longer than first_byte too
      H.send(talker, "stats")
      assert.are.equal("timeouts=1", must_line(srv, talker, "stats"))
      assert.are.equal(0, srv:stop())
    end)

    it("--timeout first_byte frees max_clients slots held by silent clients", function()
      local srv = H.start(script("max_clients = 2,"), { args = { "--timeout", "first_byte=300" } })
      local s1 = srv:connect()
      local s2 = srv:connect()
      local id1, id2 = id_of(srv, s1), id_of(srv, s2)
      for _, c in ipairs({ s1, s2 }) do
        local err = H.read_to_close(c, 5)
        assert.truthy(closed_ok(err), "a silent client was not closed: " .. tostring(err))
      end
      must_log(srv, "@@ CLOSE " .. id1 .. " first_byte timeout\n", 3, true)
      must_log(srv, "@@ CLOSE " .. id2 .. " first_byte timeout\n", 3, true)
      local c = srv:connect()
      H.send(c, "hello")
      assert.are.equal("hello", c:receive(5))
      assert.are.equal(0, srv:stop())
    end)
  end)

  ---------------------------------------------------------------------------
  -- 9. host memory counts toward max_lua_memory
  ---------------------------------------------------------------------------

  it("timers count toward max_lua_memory: creating them fails at the cap, and nothing leaks", function()
    local srv = H.start([[
local hs = require "hotsock"
local fn = function() end
return {
  framing = "line",
  max_lua_memory = 16 * 1024 * 1024,
  handler_budget = 10000,
  on_message = function(conn, line)
    if line == "timers" then
      collectgarbage()
      local ballast = string.rep("m", 1024 * 1024) -- headroom to give back
      local before = hs.stats().lua_memory
      local n = 0
      local ok, err = pcall(function()
        for i = 1, 150000 do hs.after(1e9, fn); n = i end
      end)
      ballast = nil -- the heap is at the cap: make room to report
      collectgarbage()
      local after = hs.stats().lua_memory + 1024 * 1024
      conn:send(("timers %s %d %d %d\n"):format(tostring(ok), n, before, after))
    else
      conn:send("echo ", line, "\n")
    end
  end,
}
]])
    local c = srv:connect()
    H.send(c, "timers\n")
    local l = must_line(srv, c, "timers result")
    local ok, n, before, after = l:match("^timers (%S+) (%d+) (%d+) (%d+)$")
    assert.truthy(ok, l)
    n, before, after = tonumber(n), tonumber(before), tonumber(after)
    assert.are.equal("false", ok, ("150000 timers fit in a 16 MiB heap: their host memory is not counted (%s)"):format(l))
    assert.is_true(n > 0 and n < 150000, l)
    assert.is_true((after - before) >= 50 * n, "lua_memory grew by less than 50 bytes per timer: " .. l)
    H.send(c, "still\n")
    assert.are.equal("echo still", must_line(srv, c, "echo after the cap"))
    local d = srv:connect()
    H.send(d, "other\n")
    assert.are.equal("echo other", must_line(srv, d, "another client"))
    assert.are.equal(0, srv:stop()) -- and no LeakSanitizer report
  end)

  ---------------------------------------------------------------------------
  -- 11. os.exit and warn go through the host
  ---------------------------------------------------------------------------

  describe("the host's process", function()
    local SCRIPT = [[
return {
  framing = "line",
  on_message = function(conn, line)
    if line == "exit" then
      conn:send(string.rep("z", 1000000), "\nbye\n")
      os.exit(3)
    elseif line == "warn" then
      warn("a warning from conn ", tostring(conn.id))
      conn:send("warned\n")
    else
      conn:send("echo ", line, "\n")
    end
  end,
  on_shutdown = function() io.stderr:write("@@ SHUTDOWN\n") end,
}
]]

    it("os.exit(3) in a handler stops like SIGTERM: queued output arrives, on_shutdown runs, exit code 3", function()
      local srv = H.start(SCRIPT)
      local other = srv:connect()
      local c = srv:connect()
      H.send(c, "exit\n")
      local data, err = H.read_all(c, nil, 10)
      assert.are.equal(1000000 + 5, #data, "queued output before os.exit must reach the client")
      assert.are.equal("\nbye\n", data:sub(-5))
      assert.are.equal("closed", err)
      local oerr = H.read_to_close(other, 5)
      assert.truthy(closed_ok(oerr), tostring(oerr))
      local rc = srv:wait_exit(10)
      if rc == nil then srv:kill() end
      srv.stopped = true
      local log = srv:stderr()
      assert.is_nil(H.sanitizer_report(log), H.sanitizer_report(log))
      assert.are.equal(3, rc)
      assert.truthy(log:find("os.exit", 1, true), "no log line mentions os.exit:\n" .. log:sub(-1500))
      assert.truthy(log:find("@@ SHUTDOWN", 1, true), "on_shutdown did not run:\n" .. log:sub(-1500))
    end)

    it("warn() from a script is written to the log", function()
      local srv = H.start(SCRIPT)
      local c = srv:connect()
      H.send(c, "warn\n")
      assert.are.equal("warned", must_line(srv, c, "warn"))
      must_log(srv, "a warning from conn %d+", 3)
      assert.are.equal(0, srv:stop())
    end)
  end)

  ---------------------------------------------------------------------------
  -- what a script can reach: the objects of a closing connection, the
  -- module, metatables and the debug library
  ---------------------------------------------------------------------------

  describe("scripts against the host's objects", function()
    it("on_close during a stop can read conn.listener and a unix peer after the listeners closed", function()
      local dir = H.tempdir()
      local path = dir .. "/s.sock"
      local srv = H.start([[
return {
  framing = "line",
  on_message = function(conn, line) conn:send("ok\n") end,
  on_close = function(conn, reason)
    io.stderr:write("@@ BYE ", tostring(conn.listener), " ", tostring(conn.peer), " ",
      tostring(conn.local_addr), " ", tostring(conn), " ", reason, "\n")
  end,
}
]], { listen = { "127.0.0.1:0", "unix:" .. path } })
      local a = srv:connect()
      local b = srv:connect("unix:" .. path)
      H.send(a, "x\n")
      H.send(b, "y\n")
      assert.are.equal("ok", must_line(srv, a, "tcp client"))
      assert.are.equal("ok", must_line(srv, b, "unix client"))
      assert.are.equal(0, srv:stop()) -- and no sanitizer report
      local log = srv:stderr()
      assert.truthy(log:find("@@ BYE unix:" .. path .. " " .. path .. " unix:" .. path, 1, true), log)
      assert.truthy(log:match("@@ BYE 127%.0%.0%.1:%d+ 127%.0%.0%.1:%d+ 127%.0%.0%.1:%d+ conn %d+ %(127"), log)
      assert.are.equal(2, select(2, log:gsub("@@ BYE [^\n]* shutdown", "")), log)
    end)

    it("an error in handle is counted and logged once, also with a <close> variable", function()
      local srv = H.start([[
local hs = require "hotsock"
return {
  handle = function(conn)
    local cmd = conn:receive()
    if cmd == "boom" then
      local guard <close> = setmetatable({}, { __close = function() end })
      error("boom-marker")
    end
    conn:send(tostring(hs.stats().handler_errors), "\n")
  end,
}
]])
      local a = srv:connect()
      H.send(a, "boom\n")
      local _, err = H.line(a)
      assert.truthy(closed_ok(err), tostring(err))
      local b = srv:connect()
      H.send(b, "count\n")
      assert.are.equal("1", must_line(srv, b, "handler_errors"))
      assert.are.equal(1, srv:count_log("boom-marker", true))
      assert.are.equal(0, srv:stop())
    end)

    it("a module whose handle went away closes new clients with a handler error and keeps running", function()
      local srv = H.start([[
local M = {}
function M.handle(conn)
  M.handle = nil
  conn:send("first\n")
end
return M
]])
      local a = srv:connect()
      assert.are.equal("first", must_line(srv, a, "first client"))
      for _ = 1, 3 do
        local c = srv:connect()
        local l, err = H.line(c)
        assert.is_nil(l)
        assert.truthy(closed_ok(err), tostring(err))
      end
      must_log(srv, "no handle function", 3, true)
      assert.are.equal(0, srv:stop())
    end)

    it("getmetatable hides the host's metatables, and debug cannot reach around the budget", function()
      local srv = H.start([[
local function try(f, ...)
  local ok, err = pcall(f, ...)
  return ok and "ok" or (tostring(err):match("not available") and "refused" or tostring(err))
end
local hs = require "hotsock"
return {
  framing = "line",
  on_message = function(conn, line)
    local t = hs.after(1e6, function() end)
    local r = {
      tostring(getmetatable(conn)), tostring(getmetatable(t)), tostring(getmetatable(io.stdout)),
      try(function() getmetatable(conn).__gc = function() end end) == "ok" and "gc-set" or "gc-refused",
      try(debug.getupvalue, setmetatable, 1), try(debug.setupvalue, setmetatable, 1, nil),
      try(debug.getregistry), try(debug.getmetatable, conn), try(debug.sethook),
      try(debug.getlocal, 1, 1), try(debug.upvaluejoin, try, 1, try, 1),
      type(debug.traceback()), type(debug.getinfo(1)),
    }
    t:cancel()
    conn:send(table.concat(r, " "), "\n")
  end,
}
]])
      local c = srv:connect()
      H.send(c, "go\n")
      assert.are.equal("hotsock.conn hotsock.timer FILE* gc-refused refused refused refused "
        .. "refused refused refused refused string table", must_line(srv, c, "reach"))
      assert.are.equal(0, srv:stop())
    end)

    it("a start that cannot listen ends even when the chunk opened an outbound connection", function()
      local up = H.start(ECHO_UPSTREAM)
      local blocker = H.start(ECHO_UPSTREAM)
      local rc, _, err = H.run({ "-l", "127.0.0.1:" .. blocker.port, H.write_script(([[
local hs = require "hotsock"
hs.connect("127.0.0.1", %d, { on_connect = function() end })
return { on_message = function() end }
]]):format(up.port)) }, { timeout = 10 })
      assert.are.equal(1, rc, err) -- 124 when it hung until timeout(1) killed it
      assert.truthy(err:find("cannot listen", 1, true), err)
    end)
  end)
end)
