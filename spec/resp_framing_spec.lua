-- framing = "resp": the host cuts Redis commands and hands each to the
-- script as a table of arguments; on_frame_error answers input that cannot
-- be framed before the host closes the connection.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"

-- Answers each command with "+<count> =<hex> =<hex>...".
local ARGS_SCRIPT = [[
local function hex(s) return (s:gsub(".", function(c) return ("%%02x"):format(c:byte()) end)) end
return {
  framing = "resp",
  %s
  on_message = function(conn, argv)
    assert(type(argv) == "table", "argv is a " .. type(argv))
    local out = {}
    for i = 1, #argv do out[i] = "=" .. hex(argv[i]) end
    conn:send("+", #argv, " ", table.concat(out, " "), "\r\n")
  end,
  on_close = function(conn, reason) io.stderr:write("@@ CLOSE ", conn.id, " ", reason, "\n") end,
}
]]

local function start(extra)
  return H.start(ARGS_SCRIPT:format(extra or ""))
end

-- the argument list a "+n hex hex..." reply stands for
local function args(line)
  assert(line, "no reply")
  local n, rest = line:match("^%+(%d+) ?(.*)$")
  assert(n, "not an args reply: " .. line)
  local out = {}
  for h in rest:gmatch("=(%x*)") do out[#out + 1] = H.unhex(h) end
  assert.are.equal(tonumber(n), #out, line)
  return out
end

local function bulk(...)
  local t = { "*" .. select("#", ...) .. "\r\n" }
  for _, a in ipairs({ ... }) do t[#t + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n" end
  return table.concat(t)
end

describe('framing = "resp"', function()
  after_each(H.cleanup)

  it("hands over multibulk commands, binary-safe, pipelined in one write", function()
    local srv = start()
    local c = srv:connect()
    H.send(c, bulk("SET", "k", "a\r\nb\0c") .. bulk("GET", "k") .. bulk("ECHO", ""))
    assert.are.same({ "SET", "k", "a\r\nb\0c" }, args(H.line(c)))
    assert.are.same({ "GET", "k" }, args(H.line(c)))
    assert.are.same({ "ECHO", "" }, args(H.line(c)))
  end)

  it("reassembles a command sent one byte at a time", function()
    local srv = start()
    local c = srv:connect()
    H.send_bytewise(c, bulk("MSET", "a", "1", "b", ("x"):rep(100)))
    assert.are.same({ "MSET", "a", "1", "b", ("x"):rep(100) }, args(H.line(c)))
  end)

  it("splits inline commands as Redis does and skips blank lines and empty arrays", function()
    local srv = start()
    local c = srv:connect()
    H.send(c, "\r\n  \r\n*0\r\n*-1\r\nset k \"a b\\x41\\n\" 'it\\'s'\nPING\r\n")
    assert.are.same({ "set", "k", "a bA\n", "it's" }, args(H.line(c)))
    assert.are.same({ "PING" }, args(H.line(c)))
  end)

  it("works with redis-cli", function()
    if os.execute("command -v redis-cli >/dev/null 2>&1") ~= true then
      pending("redis-cli is not installed")
      return
    end
    local srv = start()
    local f = assert(io.popen("timeout 20 redis-cli -p " .. srv.port .. " set greeting 'hi there' 2>&1"))
    local out = f:read("a")
    f:close()
    assert.are.equal("3 =736574 =6772656574696e67 =6869207468657265\n", out)
  end)

  it("without on_frame_error, a protocol error resets that client only", function()
    local srv = start()
    local good, bad = srv:connect(), srv:connect()
    H.send(bad, bulk("PING") .. "*1\r\n:1\r\n")
    local err = H.read_to_close(bad)
    assert.truthy(err == "closed" or err == "connection reset by peer", tostring(err))
    srv:expect_log("@@ CLOSE %d+ Protocol error: expected '%$'\n")
    srv:expect_log("warn conn %d+: Protocol error: expected '%$' %(framing resp")
    H.send(good, bulk("PING"))
    assert.are.same({ "PING" }, args(H.line(good)))
  end)

  it("on_frame_error answers, earlier replies are kept, then the connection closes", function()
    local srv = start([[
  on_frame_error = function(conn, why) conn:send("-ERR ", why, "\r\n") end,
  max_frame = 64,]])
    local c = srv:connect()
    H.send(c, bulk("PING") .. "*1\r\n$x\r\n")
    assert.are.same({ "PING" }, args(H.line(c)))
    assert.are.equal("-ERR Protocol error: invalid bulk length", H.line(c))
    assert.are.equal("closed", (H.read_to_close(c)))
    srv:expect_log("@@ CLOSE %d+ Protocol error: invalid bulk length\n")
    -- a command over max_frame is refused as soon as its length is known
    c = srv:connect()
    H.send(c, "*2\r\n$3\r\nSET\r\n$100\r\n")
    assert.are.equal("-ERR frame too large", H.line(c))
    assert.are.equal("closed", (H.read_to_close(c)))
    -- an unterminated quote
    c = srv:connect()
    H.send(c, 'set k "abc\r\n')
    assert.are.equal("-ERR Protocol error: unbalanced quotes in request", H.line(c))
  end)

  it("after on_frame_error the host drains what the client still sends, then closes cleanly", function()
    local srv = start([[
  on_frame_error = function(conn, why) conn:send("-ERR ", why, "\r\n") end,
  max_frame = 64,]])
    local c = srv:connect()
    H.send(c, "*1\r\n$1000\r\n" .. ("x"):rep(500))
    assert.are.equal("-ERR frame too large", H.line(c))
    -- the rest of the oversized command, after the server answered: read
    -- and dropped, not answered with a reset
    H.sleep(0.1)
    H.send(c, ("x"):rep(500) .. "\r\n")
    c:shutdown("send")
    local err, rest = H.read_to_close(c)
    assert.are.equal("closed", err)
    assert.are.equal("", rest)
    srv:expect_log("@@ CLOSE %d+ frame too large\n")
  end)

  it("a lingering close still sends all queued output to a slow reader", function()
    local srv = H.start([[
return {
  framing = "resp",
  max_outbuf = 64 * 1024 * 1024,
  on_message = function(conn, argv) conn:send(("v"):rep(1024):rep(32 * 1024), "\r\n") end,
  on_frame_error = function(conn, why) conn:send("-ERR ", why, "\r\n") end,
}
]])
    local c = srv:connect()
    H.send(c, 'GET k\r\n"bad\r\n')
    H.sleep(3) -- longer than the 2 s linger, reading nothing
    c:settimeout(10)
    local all, err, partial = c:receive("*a")
    local got = all or partial
    assert.are.equal(32 * 1024 * 1024 + 2, (got:find("-ERR", 1, true) or 0) - 1)
    assert.truthy(got:find("\r\n%-ERR Protocol error: unbalanced quotes in request\r\n$"))
    assert.are.equal(nil, err)
  end)

  it("in a handle coroutine, receive('resp') returns the next command's arguments", function()
    local srv = H.start([[
return {
  handle = function(conn)
    while true do
      local argv, err = conn:receive("resp")
      if not argv then return end
      conn:send("+", table.concat(argv, "|"), "\r\n")
    end
  end,
}
]])
    local c = srv:connect()
    H.send(c, bulk("A", "b") .. "c d\r\n" .. bulk("E"))
    assert.are.equal("+A|b", H.line(c))
    assert.are.equal("+c|d", H.line(c))
    assert.are.equal("+E", H.line(c))
  end)

  it("in a handle coroutine, a protocol error reaches receive however the bytes are split", function()
    local srv = H.start([[
return {
  framing = "resp",
  handle = function(conn)
    while true do
      local argv, err = conn:receive("resp")
      if not argv then
        conn:send("-ERR ", err, "\r\n")
        assert(conn:receive("resp") == nil) -- and at every later call
        return
      end
      conn:send("+", argv[1], "\r\n")
    end
  end,
  on_close = function(conn, reason) io.stderr:write("@@ CLOSE ", conn.id, " ", reason, "\n") end,
}
]])
    for _, split in ipairs({ false, true }) do
      local c = srv:connect()
      if split then
        H.send(c, "PING\r\n")
        assert.are.equal("+PING", H.line(c))
        H.send(c, '"unbalanced\r\n')
      else
        H.send(c, 'PING\r\n"unbalanced\r\n') -- the bad bytes already buffered
        assert.are.equal("+PING", H.line(c))
      end
      assert.are.equal("-ERR Protocol error: unbalanced quotes in request", H.line(c))
      local err, rest = H.read_to_close(c)
      assert.are.equal("closed", err)
      assert.are.equal("", rest)
      c:close() -- the server lingers until it sees this
    end
    assert.truthy(H.wait_until(function()
      return srv:count_log("@@ CLOSE %d+ Protocol error: unbalanced quotes in request\n") == 2
    end, 3), srv:stderr())
  end)

  it("closes a client whose command would not fit in the Lua heap, and lives on", function()
    local srv = start("max_lua_memory = 8 * 1024 * 1024, max_frame = 16 * 1024 * 1024, max_inbuf = 16 * 1024 * 1024,")
    local good, big = srv:connect(), srv:connect()
    -- 1M one-byte arguments: about 7 MiB on the wire, far more as Lua strings
    local parts = { "*1000000\r\n" }
    local one = "$1\r\nx\r\n"
    local chunk = one:rep(10000)
    for i = 1, 100 do parts[i + 1] = chunk end
    big:settimeout(10)
    big:send(table.concat(parts))
    local err = H.read_to_close(big)
    assert.truthy(err == "closed" or err == "connection reset by peer", tostring(err))
    srv:expect_log("no room in the Lua heap for a %d+%-byte message")
    srv:expect_log("@@ CLOSE %d+ out of memory\n")
    H.send(good, bulk("STILL", "here"))
    assert.are.same({ "STILL", "here" }, args(H.line(good)))
  end)
end)
