-- Hostile clients and runaway scripts: every limit trips for the one
-- connection that breached it, is counted exactly in hs.stats(), and a
-- neighbour keeps getting answers throughout.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local function closed_ok(err)
  return err == "closed" or err == "connection reset by peer"
end

-- A line server with a control protocol. "--TOP--" is replaced by the
-- module's limit settings.
local SCRIPT = [[
local hs = require "hotsock"
local function log(...) io.stderr:write("@@ ", table.concat({ ... }, " "), "\n") end
local KEYS = { "accepted", "rejected", "active", "closed", "bytes_in", "bytes_out",
  "frames_in", "handler_errors", "handler_timeouts", "oversize_frames",
  "outbuf_disconnects", "timeouts", "lua_memory" }
local function find(id)
  for c in hs.clients() do if c.id == id then return c end end
end
local CMD = {}
function CMD.stats(conn)
  local s, out = hs.stats(), {}
  for _, k in ipairs(KEYS) do out[#out + 1] = k .. "=" .. tostring(s[k]) end
  conn:send("stats ", table.concat(out, " "), "\n")
end
function CMD.peek(conn, arg)
  local c = find(tonumber(arg))
  if c then conn:send("peek open ", tostring(c.bytes_in), " ", tostring(c:buffered()), "\n")
  else conn:send("peek gone\n") end
end
function CMD.spin() while true do end end
function CMD.pspin(conn)
  pcall(function() while true do end end)
  conn:send("escaped\n")
end
function CMD.cospin(conn)
  coroutine.wrap(function() while true do end end)()
  conn:send("escaped\n")
end
function CMD.pcospin(conn)
  pcall(coroutine.wrap(function() while true do end end))
  conn:send("escaped\n")
end
-- The stop is raised inside Lua's hook, where hooks are off: the <close>
-- handler of the coroutine it kills, and an xpcall message handler, must
-- not run free of the budget.
local function spin() while true do end end
function CMD.wclose(conn)
  coroutine.wrap(function()
    local x <close> = setmetatable({}, { __close = spin })
    spin()
  end)()
  conn:send("escaped\n")
end
function CMD.xpspin(conn)
  while true do xpcall(spin, spin) end
end
local held -- a coroutine the budget stopped, closed by a later handler
function CMD.hold(conn)
  held = coroutine.create(function()
    local x <close> = setmetatable({}, { __close = spin })
    spin()
  end)
  coroutine.resume(held)
end
function CMD.closeheld(conn)
  local ok, err = coroutine.close(held)
  conn:send("closed ", tostring(ok), " ", tostring(err):match("exceeded") or tostring(err), "\n")
end
function CMD.copspin(conn)
  for _ = 1, 1e9 do
    pcall(coroutine.wrap(function()
      while true do pcall(function() while true do end end) end
    end))
  end
  conn:send("escaped\n")
end
function CMD.rep(conn)
  local s = string.rep("x", 2 ^ 30)
  conn:send("escaped ", tostring(#s), "\n")
end
function CMD.double(conn)
  local s = "x"
  while true do s = s .. s end
end
function CMD.grow(conn)
  local t, i = {}, 0
  while true do i = i + 1; t[i] = ("g"):rep(64) .. i end
end
function CMD.settimeouts(conn, arg)
  local t = {}
  for k, v in arg:gmatch("(%a+)=(%d+)") do t[k] = tonumber(v) end
  conn:settimeouts(t)
  conn:send("set\n")
end
function CMD.tick(conn, arg)
  local t
  t = hs.every(tonumber(arg), function()
    if conn.closed then t:cancel() else conn:send("tick\n") end
  end)
  conn:send("ticking\n")
end
function CMD.big(conn, arg)
  local n = tonumber(arg) -- in 1 KiB pieces: one byte at a time is over the budget
  conn:send(string.rep(string.rep("w", 1024), n // 1024), string.rep("w", n % 1024))
  log("BIGSENT", conn.id)
end
-- bcast SIZE MAX: broadcast SIZE bytes to every client but the caller each
-- tick until one of them is cut off or MAX were sent, then tell each
-- client still open how much it was sent.
function CMD.bcast(conn, arg)
  local size, max = arg:match("^(%d+) (%d+)$")
  size, max = tonumber(size), tonumber(max)
  local chunk = ("b"):rep(size)
  local n, counts, t = 0, {}, nil
  t = hs.every(2, function()
    local before = hs.stats().outbuf_disconnects
    n = n + 1
    local sent = hs.broadcast(chunk, function(c)
      if c == conn then return false end
      counts[c] = (counts[c] or 0) + 1
      return true
    end)
    log("BCAST", tostring(n), tostring(sent))
    if hs.stats().outbuf_disconnects > before or n >= max then
      t:cancel()
      for c, k in pairs(counts) do
        if not c.closed then c:send("\nEND ", tostring(k * size), "\n") end
      end
      conn:send("bcast done ", tostring(n), "\n")
    end
  end)
end
function CMD.quiet(conn) conn.quiet = true end
return {
  framing = "line",
  --TOP--
  on_connect = function(conn) conn:send("id ", tostring(conn.id), "\n") end,
  on_message = function(conn, line)
    if conn.quiet then return end
    local cmd, arg = line:match("^(%S*)%s*(.*)$")
    if CMD[cmd] then return CMD[cmd](conn, arg) end
    conn:send("echo ", line, "\n")
  end,
  on_close = function(conn, reason)
    log("CLOSE", tostring(conn.id), reason, tostring(conn.bytes_in))
  end,
}
]]

local function script(top)
  return (SCRIPT:gsub("%-%-TOP%-%-", function() return top or "" end))
end

local function open(srv)
  local c = srv:connect()
  local l = assert(H.line(c))
  return c, assert(tonumber(l:match("^id (%d+)$")), l)
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
  for k, v in l:gmatch("([%a_]+)=(%d+)") do t[k] = tonumber(v) end
  assert(t.accepted, "bad stats line: " .. l)
  return t
end

-- The neighbour is answered, in order.
local function served(c, tag)
  assert.are.equal("echo " .. tag, ask(c, tag))
end

-- Exact changes of the counters that count events; every one not named in
-- `want` must not have moved.
local EVENTS = { "accepted", "rejected", "closed", "handler_errors", "handler_timeouts",
  "oversize_frames", "outbuf_disconnects", "timeouts" }
local function assert_changes(before, after, want)
  for _, k in ipairs(EVENTS) do
    assert.are.equal((want[k] or 0), after[k] - before[k], "change of " .. k)
  end
end

-- The close lines of the server's stderr, by connection id.
local function closes(srv)
  local by, n = {}, 0
  for id, reason, bytes in srv:stderr():gmatch("@@ CLOSE (%d+) ([^\n]-) (%d+)\n") do
    id = tonumber(id)
    n = n + 1
    by[id] = by[id] or {}
    table.insert(by[id], { reason = reason, bytes_in = tonumber(bytes) })
  end
  return by, n
end

-- on_close ran exactly once for every connection that closed, and as many
-- times as `closed` counts.
local function assert_close_once(srv, st)
  local by, n = closes(srv)
  for id, list in pairs(by) do
    assert.are.equal(1, #list, "on_close ran " .. #list .. " times for connection " .. id)
  end
  assert.are.equal(st.closed, n, "closed counter vs on_close calls")
end

-- Wait for connection `id` to close; returns its reason and bytes read.
local function wait_close(srv, id, timeout)
  local r = H.wait_until(function()
    local list = closes(srv)[id]
    return list and list[1]
  end, timeout or 5)
  assert(r, ("connection %d did not close; stderr:\n%s"):format(id, srv:stderr():sub(-2000)))
  return r.reason, r.bytes_in
end

local function peek(c, id)
  local l = ask(c, "peek " .. id)
  if l == "peek gone" then return nil end
  local bytes, queued = l:match("^peek open (%d+) (%d+)$")
  return tonumber(bytes), tonumber(queued)
end

local function count(text, needle)
  local n, i = 0, 1
  while true do
    local s, e = text:find(needle, i, true)
    if not s then return n end
    n, i = n + 1, e + 1
  end
end

local function fd_count(pid)
  local p = assert(io.popen("ls /proc/" .. pid .. "/fd 2>/dev/null | wc -l"))
  local n = tonumber(p:read("a"):match("%d+"))
  p:close()
  return n
end

local function vmrss_kib(pid)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

describe("abuse", function()
  after_each(H.cleanup)

  it("max_clients: over it a client is accepted and closed at once, counted 'rejected'", function()
    local srv = H.start(script("max_clients = 3,"))
    local nb = open(srv)
    local a = open(srv)
    local b = open(srv)
    local t0 = socket.gettime()
    local before = stats(nb)
    for i = 1, 5 do
      local x = srv:connect()
      local err, data = H.read_to_close(x)
      assert.are.equal("", data, "a rejected client was greeted")
      assert.truthy(closed_ok(err), tostring(err))
      served(nb, "r" .. i)
    end
    local after = stats(nb)
    local elapsed = socket.gettime() - t0
    assert_changes(before, after, { rejected = 5 })
    assert.are.equal(3, after.active)
    -- existing clients are unaffected
    served(a, "a")
    served(b, "b")
    -- the warning is rate limited to one line a second
    local warns = srv:count_log("max_clients (3) reached", true)
    assert.is_true(warns >= 1 and warns <= 1 + math.floor(elapsed), warns .. " warnings")
    -- a slot freed by a client that leaves is reused
    b:close()
    assert.truthy(H.wait_until(function() return stats(nb).active == 2 end, 3, 0.02))
    local c = open(srv)
    served(c, "c")
    local fin = stats(nb)
    assert_changes(after, fin, { accepted = 1, closed = 1 })
    assert_close_once(srv, fin)
  end)

  it("max_frame: a line without a newline closes that client one byte past the cap", function()
    local srv = H.start(script("max_frame = 1024,"))
    local nb = open(srv)
    local c, id = open(srv)
    local before = stats(nb)
    H.send(c, ("L"):rep(1024))
    assert.truthy(H.wait_until(function() return peek(nb, id) == 1024 end, 3),
      "the server did not read the 1024 bytes")
    served(nb, "at-cap")
    assert.is_nil(closes(srv)[id], "closed at the cap")
    assert_changes(before, stats(nb), {})
    H.send(c, "L")
    local reason, bytes = wait_close(srv, id)
    assert.are.equal("frame too large", reason)
    assert.are.equal(1025, bytes)
    local err = H.read_to_close(c)
    assert.truthy(closed_ok(err), tostring(err))
    served(nb, "after")
    local after = stats(nb)
    assert_changes(before, after, { oversize_frames = 1, closed = 1 })
    assert.are.equal(1, srv:count_log("frame too large (framing line, max_frame 1024)", true))
    assert_close_once(srv, after)
  end)

  it("max_frame: a flood with no newline is cut off after one read, not buffered", function()
    local srv = H.start(script("max_frame = 4096,"))
    local nb = open(srv)
    local c, id = open(srv)
    local before = stats(nb)
    local blob = ("F"):rep(1024 * 1024)
    c:settimeout(3)
    local sent, err = 0, nil
    for _ = 1, 64 do                                  -- up to 64 MiB
      local n, e, partial = c:send(blob)
      sent = sent + (n or partial or 0)
      if not n then err = e break end
    end
    assert.truthy(err, "the server took 64 MiB of one line")
    local reason, bytes = wait_close(srv, id)
    assert.are.equal("frame too large", reason)
    -- at most the cap and one read buffer were ever held
    assert.is_true(bytes <= 4096 + 128 * 1024, "read " .. bytes .. " bytes")
    served(nb, "after")
    local after = stats(nb)
    assert_changes(before, after, { oversize_frames = 1, closed = 1 })
    assert_close_once(srv, after)
  end)

  it("max_inbuf: unframed input piling up closes that client one byte past the cap", function()
    local srv = H.start(script("max_inbuf = 65536, max_frame = 1048576,"))
    local nb = open(srv)
    local c, id = open(srv)
    local before = stats(nb)
    H.send(c, ("I"):rep(65536))
    assert.truthy(H.wait_until(function() return peek(nb, id) == 65536 end, 3),
      "the server did not read the 65536 bytes")
    served(nb, "at-cap")
    assert.is_nil(closes(srv)[id], "closed at the cap")
    H.send(c, "I")
    local reason, bytes = wait_close(srv, id)
    assert.are.equal("input too large", reason)
    assert.are.equal(65537, bytes)
    local err = H.read_to_close(c)
    assert.truthy(closed_ok(err), tostring(err))
    served(nb, "after")
    local after = stats(nb)
    assert.are.equal(1, srv:count_log("input buffer over max_inbuf (65536 bytes)", true))
    assert_close_once(srv, after)
    after.oversize_frames = before.oversize_frames    -- counted: see the next test
    assert_changes(before, after, { closed = 1 })
  end)

  it("max_inbuf: an 'input too large' close is counted in oversize_frames", function()
    local srv = H.start(script("max_inbuf = 4096, max_frame = 1048576,"))
    local nb = open(srv)
    local c, id = open(srv)
    local before = stats(nb)
    H.send(c, ("I"):rep(8192))
    assert.are.equal("input too large", (wait_close(srv, id)))
    served(nb, "after")
    assert_changes(before, stats(nb), { oversize_frames = 1, closed = 1 })
  end)

  it("max_inbuf: a flood is cut off just past the cap, not buffered", function()
    local srv = H.start(script("max_inbuf = 131072, max_frame = 16777216,"))
    local nb = open(srv)
    local c, id = open(srv)
    local blob = ("F"):rep(1024 * 1024)
    c:settimeout(3)
    local err
    for _ = 1, 64 do
      local n, e = c:send(blob)
      if not n then err = e break end
    end
    assert.truthy(err, "the server took 64 MiB of one line")
    local reason, bytes = wait_close(srv, id)
    assert.are.equal("input too large", reason)
    assert.is_true(bytes > 131072 and bytes <= 131072 + 128 * 1024, "read " .. bytes .. " bytes")
    served(nb, "after")
    assert_close_once(srv, stats(nb))
  end)

  it("max_outbuf: hs.broadcast cuts off the client that never reads, not the one that does", function()
    local srv = H.start(script("max_outbuf = 1048576,"))
    local nb = open(srv)
    local slow, slow_id = open(srv)
    local fast, fast_id = open(srv)
    H.send(slow, "quiet\n")
    served(nb, "ready")
    local before = stats(nb)
    -- 32 KiB every 2 ms until the slow client is cut off (at most 64 MiB)
    H.send(nb, "bcast 32768 2048\n")
    fast:settimeout(10)
    local got, tail = 0, nil
    local deadline = socket.gettime() + 30
    while socket.gettime() < deadline do
      local data, e, partial = fast:receive(65536)
      local chunk = data or partial or ""
      local s = chunk:find("\n", 1, true)
      if s then
        got = got + s - 1
        tail = chunk:sub(s + 1)
        break
      end
      got = got + #chunk
      if not data and e ~= "timeout" then error("fast client: " .. tostring(e)) end
    end
    assert.truthy(tail, "no END line for the reading client")
    local rest = tail:find("\n", 1, true) and tail or (tail .. assert(fast:receive("*l")) .. "\n")
    local total = tonumber(rest:match("^END (%d+)\n"))
    assert.are.equal(total, got, "the reading client lost broadcast data")
    local done = assert(H.line(nb))
    assert.truthy(done:match("^bcast done %d+$"), done)
    local reason = wait_close(srv, slow_id)
    assert.are.equal("output buffer full", reason)
    assert.is_nil(closes(srv)[fast_id], "the reading client was cut off")
    local after = stats(nb)
    assert_changes(before, after, { outbuf_disconnects = 1, closed = 1 })
    local warn = H.lines_with(srv:stderr(), "over max_outbuf")
    assert.are.equal(1, #warn)
    local queued = tonumber(warn[1]:match("%((%d+) bytes queued, limit 1048576%)"))
    assert.truthy(queued and queued > 1048576 and queued <= 1048576 + 32768, warn[1])
    served(fast, "still")
    assert_close_once(srv, after)
  end)

  it("timeouts: idle, read, write and frame each close their connection once and count once", function()
    local srv = H.start(script("max_outbuf = 67108864, timeouts = { write = 0, frame = 0 },"))
    local nb = open(srv)
    local idle, idle_id = open(srv)
    local rd, rd_id = open(srv)
    local wr, wr_id = open(srv)
    local fr, fr_id = open(srv)
    local before = stats(nb)
    assert.are.equal("set", ask(idle, "settimeouts idle=300"))
    assert.are.equal("set", ask(rd, "settimeouts read=300"))
    assert.are.equal("ticking", ask(rd, "tick 30"))
    assert.are.equal("set", ask(wr, "settimeouts write=300"))
    H.send(wr, "big 33554432\n")          -- 32 MiB it never reads
    assert.are.equal("set", ask(fr, "settimeouts frame=300"))
    H.send(fr, "never ends")
    -- the reading client keeps reading ticks; the idle one does nothing
    rd:settimeout(0.05)
    local ids = { [idle_id] = "idle timeout", [rd_id] = "read timeout",
      [wr_id] = "write timeout", [fr_id] = "frame timeout" }
    local i = 0
    local ok = H.wait_until(function()
      rd:receive("*l")
      i = i + 1
      if i % 5 == 0 then served(nb, "t" .. i) end
      local by = closes(srv)
      for id in pairs(ids) do if not by[id] then return false end end
      return true
    end, 8, 0.01)
    assert.truthy(ok, "not every timeout fired:\n" .. srv:stderr():sub(-2000))
    local by = closes(srv)
    for id, reason in pairs(ids) do assert.are.equal(reason, by[id][1].reason) end
    served(nb, "after")
    local after = stats(nb)
    assert_changes(before, after, { timeouts = 4, closed = 4 })
    for _, which in ipairs({ "idle", "read", "write", "frame" }) do
      assert.are.equal(1, srv:count_log(which .. " timeout (300 ms); closing", true), which)
    end
    assert_close_once(srv, after)
  end)

  it("frame timeout: a slowloris trickling a byte at a time is closed at the frame deadline", function()
    local srv = H.start(script("timeouts = { frame = 400, idle = 0, read = 0 },"))
    local nb = open(srv)
    local c, id = open(srv)
    local before = stats(nb)
    c:setoption("tcp-nodelay", true)
    -- 400 bytes, one every 20 ms: the line would take 8 s to finish; every
    -- byte is activity, none completes a frame
    local sent, err = 0, nil
    for i = 1, 400 do
      local n, e = c:send("s")
      if not n then err = e break end
      sent = sent + 1
      if closes(srv)[id] then break end
      if i % 10 == 0 then served(nb, "s" .. i) end
      socket.sleep(0.02)
    end
    local reason, bytes = wait_close(srv, id, 1)
    assert.are.equal("frame timeout", reason)
    assert.is_true(bytes < 400, "the trickle was read to its end (" .. bytes .. " bytes)")
    local after = stats(nb)
    assert_changes(before, after, { timeouts = 1, closed = 1 })
    served(nb, "after")
    assert_close_once(srv, after)
    assert(err == nil or closed_ok(err) or err == "broken pipe", tostring(err))
  end)

  describe("handler_budget", function()
    for _, case in ipairs({
      { "spin", "while true do end" },
      { "pspin", "while true do end inside pcall" },
      { "cospin", "while true do end inside coroutine.wrap" },
      { "pcospin", "while true do end inside coroutine.wrap inside pcall" },
      { "copspin", "pcall around a coroutine around pcall, in a loop" },
      { "wclose", "a coroutine.wrap whose <close> handler spins too" },
      { "xpspin", "xpcall whose message handler spins, in a loop" },
      { "hold", "a coroutine.create whose <close> handler spins too" },
    }) do
      it("stops " .. case[2] .. "; only that connection closes", function()
        local srv = H.start(script("handler_budget = 50,"))
        local nb = open(srv)
        local other = open(srv)
        local c, id = open(srv)
        local before = stats(nb)
        H.send(c, case[1] .. "\n")
        local err, data = H.read_to_close(c, 5)
        assert.are.equal("", data, "the handler went on after its budget")
        assert.truthy(closed_ok(err), tostring(err))
        assert.are.equal("handler timeout", (wait_close(srv, id)))
        served(nb, "n")
        served(other, "o")
        local after = stats(nb)
        assert_changes(before, after, { handler_timeouts = 1, handler_errors = 1, closed = 1 })
        assert.are.equal(1, srv:count_log("on_message exceeded handler_budget (50 ms)", true))
        assert_close_once(srv, after)
      end)
    end

    it("a later coroutine.close of a coroutine the budget stopped skips its <close> handlers", function()
      local srv = H.start(script("handler_budget = 50,"))
      local nb = open(srv)
      local c, id = open(srv)
      H.send(c, "hold\n")
      assert.truthy(closed_ok((H.read_to_close(c, 5))))
      assert.are.equal("handler timeout", (wait_close(srv, id)))
      local d = open(srv)
      assert.are.equal("closed false exceeded", ask(d, "closeheld"))
      served(nb, "n")
    end)

    it("a handle coroutine stopped by the budget is dropped without running its <close> handlers", function()
      local srv = H.start([[
local function spin() while true do end end
return {
  handler_budget = 50,
  handle = function(conn)
    conn:send("id ", tostring(conn.id), "\n")
    local l = conn:receive("*l")
    if l ~= "spin" then conn:send("echo ", tostring(l), "\n") return end
    local x <close> = setmetatable({}, { __close = spin })
    spin()
  end,
  on_close = function(conn, reason) io.stderr:write("@@ CLOSE ", conn.id, " ", reason, " 0\n") end,
}
]])
      local nb = open(srv)
      local c, id = open(srv)
      H.send(c, "spin\n")
      assert.truthy(closed_ok((H.read_to_close(c, 5))))
      assert.are.equal("handler timeout", (wait_close(srv, id)))
      assert.are.equal("echo n", ask(nb, "n"))
    end)

    it("stops a coroutine-style handler spinning in a nested coroutine", function()
      local srv = H.start([[
local hs = require "hotsock"
return {
  handler_budget = 50,
  handle = function(conn)
    conn:send("id ", tostring(conn.id), "\n")
    while true do
      local l = conn:receive("*l")
      if not l then return end
      if l == "spin" then
        pcall(coroutine.wrap(function() while true do end end))
        conn:send("escaped\n")
      elseif l == "stats" then
        local s = hs.stats()
        conn:send("stats handler_timeouts=", tostring(s.handler_timeouts), " closed=",
          tostring(s.closed), "\n")
      else
        conn:send("echo ", l, "\n")
      end
    end
  end,
  on_close = function(conn, reason) io.stderr:write("@@ CLOSE ", conn.id, " ", reason, " 0\n") end,
}
]])
      local nb = open(srv)
      local c, id = open(srv)
      H.send(c, "spin\n")
      local err, data = H.read_to_close(c, 5)
      assert.are.equal("", data)
      assert.truthy(closed_ok(err), tostring(err))
      assert.are.equal("handler timeout", (wait_close(srv, id)))
      served(nb, "n")
      assert.are.equal("stats handler_timeouts=1 closed=1", ask(nb, "stats"))
      local by = closes(srv)
      assert.are.equal(1, #by[id])
    end)
  end)

  describe("max_lua_memory", function()
    for _, case in ipairs({
      { "rep", 'string.rep("x", 2^30)' },
      { "double", "a string that doubles forever" },
      { "grow", "a table that grows forever" },
    }) do
      it("fails " .. case[2] .. " with 'not enough memory' for its own connection only", function()
        local srv = H.start(script("max_lua_memory = 32 * 1024 * 1024, handler_budget = 10000,"))
        local nb = open(srv)
        local c, id = open(srv)
        local before = stats(nb)
        H.send(c, case[1] .. "\n")
        local err, data = H.read_to_close(c, 10)
        assert.are.equal("", data)
        assert.truthy(closed_ok(err), tostring(err))
        assert.are.equal("handler error", (wait_close(srv, id)))
        local errs = H.lines_with(srv:stderr(), "error in on_message")
        assert.are.equal(1, #errs)
        assert.truthy(errs[1]:find("not enough memory", 1, true), errs[1])
        served(nb, "n")
        -- the next client is served
        local d = open(srv)
        served(d, "next")
        local after = stats(nb)
        assert_changes(before, after, { handler_errors = 1, closed = 1, accepted = 1 })
        -- the heap went back down
        assert.is_true(after.lua_memory < 16 * 1024 * 1024, "lua_memory " .. after.lua_memory)
        assert_close_once(srv, after)
      end)
    end
  end)

  it("EMFILE: clients past the descriptor limit are rejected, counted and logged; service comes back", function()
    local srv = H.start(script(), { nofile = 64 })
    local nb = open(srv)
    local held = {}
    local first_reject
    local t0 = socket.gettime()
    for i = 1, 80 do
      local x = H.connect_addr(srv.addrs[1])
      assert(x, "connect " .. i)
      local l, err = x:receive("*l")
      if l then
        held[#held + 1] = x
      else
        assert.truthy(closed_ok(err), tostring(err))
        x:close()
        first_reject = i
        break
      end
    end
    assert.truthy(first_reject, "the server never ran out of descriptors")
    served(nb, "full")
    local before = stats(nb)
    for i = 1, 30 do
      local x = assert(H.connect_addr(srv.addrs[1]))
      local err, data = H.read_to_close(x)
      assert.are.equal("", data)
      assert.truthy(closed_ok(err), tostring(err))
      x:close()
      if i % 10 == 0 then served(nb, "e" .. i) end
    end
    local elapsed = socket.gettime() - t0
    local after = stats(nb)
    assert_changes(before, after, { rejected = 30 })
    local logs = srv:count_log("out of file descriptors", true)
    assert.is_true(logs >= 1 and logs <= 1 + math.floor(elapsed), logs .. " log lines")
    -- descriptors come back: so does service
    held[1]:close()
    table.remove(held, 1)
    local x = H.wait_until(function()
      local y = H.connect_addr(srv.addrs[1])
      local l = y and y:receive("*l")
      if l and l:match("^id ") then return y end
      if y then y:close() end
    end, 3, 0.05)
    assert.truthy(x, "not serving after a descriptor came back")
    served(x, "back")
    x:close()
    for _, y in ipairs(held) do y:close() end
    served(nb, "end")
    assert_close_once(srv, stats(nb))
  end)

  it("SIGPIPE is ignored: a reset in the middle of a large write is a normal close, once", function()
    local srv = H.start(script("max_outbuf = 67108864,"))
    local nb = open(srv)
    local before = stats(nb)
    local ids = {}
    for i = 1, 5 do
      local c, id = open(srv)
      ids[#ids + 1] = id
      H.send(c, "big 16777216\n")
      assert(c:receive(65536))
      c:setoption("linger", { on = true, timeout = 0 })
      c:close()
      -- the peer's reset ends the connection like any close: "reset", or
      -- "eof" when the reset was first seen by a write and the read after
      -- it found the end of the stream
      local reason = wait_close(srv, id)
      assert.truthy(reason == "reset" or reason == "eof", reason)
      served(nb, "p" .. i)
    end
    assert.is_false(srv:exited(), "the server died")
    local after = stats(nb)
    assert_changes(before, after, { accepted = 5, closed = 5 })
    assert_close_once(srv, after)
  end)

  it("1000 connect-send-reset cycles leave the descriptor count at its baseline", function()
    local srv = H.start(script())
    local nb = open(srv)
    served(nb, "warm")
    local base = fd_count(srv.pid)
    local before = stats(nb)
    for i = 1, 1000 do
      local c = assert(H.connect_addr(srv.addrs[1]))
      c:send("hello " .. i .. "\n")
      c:setoption("linger", { on = true, timeout = 0 })
      c:close()
      if i % 100 == 0 then served(nb, "c" .. i) end
    end
    local after = H.wait_until(function()
      local s = stats(nb)
      return s.active == 1 and s
    end, 10, 0.05)
    assert.truthy(after, "connections still active")
    assert_changes(before, after, { accepted = 1000, closed = 1000 })
    assert.truthy(H.wait_until(function() return fd_count(srv.pid) == base end, 5, 0.05),
      ("descriptors: %d at the start, %d now"):format(base, fd_count(srv.pid)))
    assert_close_once(srv, after)
  end)

  it("holds 5000 idle connections and reports the memory each costs", function()
    local hard = tonumber((io.popen("sh -c 'ulimit -Hn'"):read("a") or ""):match("%d+"))
    if hard and hard < 12000 then
      pending("the descriptor hard limit (" .. hard .. ") is below 12000")
      return
    end
    local N = 5000
    local srv = H.start([[
local hs = require "hotsock"
return {
  framing = "line",
  on_message = function(conn, line)
    local s = hs.stats()
    conn:send("active ", tostring(s.active), " accepted ", tostring(s.accepted), "\n")
  end,
}
]], { nofile = 12000 })
    local nb = srv:connect()
    local function active()
      H.send(nb, "q\n")
      return tonumber(assert(H.line(nb)):match("^active (%d+)"))
    end
    assert.are.equal(1, active())
    local rss0 = vmrss_kib(srv.pid)
    -- the clients live in a process of their own, with descriptors to spare
    local dir = H.tempdir()
    local client = dir .. "/clients.lua"
    local f = assert(io.open(client, "w"))
    f:write([[
local socket = require "socket"
local port, n, release = tonumber(arg[1]), tonumber(arg[2]), arg[3]
local conns = {}
for i = 1, n do
  local c = socket.tcp()
  c:settimeout(5)
  local ok, err = c:connect("127.0.0.1", port)
  if not ok then io.stderr:write("connect ", i, ": ", tostring(err), "\n") os.exit(1) end
  conns[i] = c
end
io.stdout:write("connected ", n, "\n")
io.stdout:flush()
local deadline = socket.gettime() + 60
while socket.gettime() < deadline do
  local r = io.open(release)
  if r then r:close() break end
  socket.sleep(0.05)
end
for _, c in ipairs(conns) do c:close() end
]])
    f:close()
    local release = dir .. "/release"
    local out = dir .. "/out"
    local cmd = ("ulimit -n 12000; echo $$ >%s; exec lua5.4 %s %d %d %s >%s 2>&1")
      :format(H.quote(dir .. "/pid"), H.quote(client), srv.port, N, H.quote(release), H.quote(out))
    os.execute("sh -c " .. H.quote(cmd) .. " </dev/null >/dev/null 2>&1 &")
    local pid = H.wait_until(function()
      local s = H.read_file(dir .. "/pid")
      return s and tonumber(s:match("%d+"))
    end, 3)
    local ok, err = pcall(function()
      local held = H.wait_until(function() return active() == N + 1 end, 30, 0.1)
      assert.truthy(held, "active " .. tostring(active()) .. "; clients: " .. tostring(H.read_file(out)))
      local rss1 = vmrss_kib(srv.pid)
      local per = (rss1 - rss0) * 1024 / N
      print(("\n%d idle connections: VmRSS %d KiB -> %d KiB, %.0f bytes each")
        :format(N, rss0, rss1, per))
      assert.is_true(per < 16 * 1024, ("%.0f bytes per connection"):format(per))
      assert.are.equal("active " .. (N + 1) .. " accepted " .. (N + 1), ask(nb, "q"))
    end)
    local r = io.open(release, "w")
    if r then r:close() end
    local gone = H.wait_until(function() return active() == 1 end, 20, 0.1)
    if pid and not gone then os.execute("kill " .. pid .. " 2>/dev/null") end
    assert(ok, err)
    assert.truthy(gone, "the idle clients did not all close")
  end)
end)
