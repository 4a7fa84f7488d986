-- examples/proxy.lua: relaying both ways, byte counts, backpressure, and an
-- upstream that is down.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local function proxy_to(addr, opts)
  opts = opts or {}
  opts.script_args = { addr }
  return H.start("examples/proxy.lua", opts)
end

describe("examples/proxy.lua", function()
  after_each(H.cleanup)

  it("relays lines both ways and logs the bytes each way", function()
    local echo = H.start("examples/echo.lua")
    local proxy = proxy_to(echo.addrs[1])
    local c = proxy:connect()
    for i = 1, 50 do
      H.send(c, "line " .. i .. "\n")
      assert.are.equal("line " .. i, H.line(c))
    end
    local up = ("line 1\n"):len() * 9 + ("line 10\n"):len() * 41
    c:close()
    local a, b, why = proxy:expect_log("client %d+ %(.-%): (%d+) bytes up, (%d+) bytes down, (%S+)\n")
    assert.are.equal(tostring(up), a)
    assert.are.equal(tostring(up), b)
    assert.are.equal("eof", why)
  end)

  it("half-closes: the upstream's answer to EOF still reaches the client", function()
    local lsrv = assert(socket.bind("127.0.0.1", 0))
    lsrv:settimeout(3)
    local _, lport = lsrv:getsockname()
    local proxy = proxy_to("127.0.0.1:" .. lport)
    local c = proxy:connect()
    H.send(c, "question")
    local up = assert(lsrv:accept())
    up:settimeout(3)
    c:shutdown("send")
    -- the upstream reads to EOF, then answers and closes
    local got, err, partial = up:receive("*a")
    assert.are.equal("question", got or partial)
    H.send(up, "answer")
    up:close()
    assert.are.equal("answer", c:receive("*a"))
    lsrv:close()
  end)

  it("stops reading a client while the upstream does not read, and loses nothing", function()
    local lsrv = assert(socket.bind("127.0.0.1", 0))
    lsrv:settimeout(3)
    local _, lport = lsrv:getsockname()
    -- max_outbuf far below what the client pushes: without backpressure the
    -- relay would queue it all and be cut off with "output buffer full".
    local script = H.read_file(H.root .. "/examples/proxy.lua")
      :gsub('framing = "raw",', 'framing = "raw", max_outbuf = 2 * 1024 * 1024,', 1)
    local proxy = H.start(script, { script_args = { "127.0.0.1:" .. lport } })
    local c = proxy:connect()
    local up = assert(lsrv:accept())
    local block = string.rep("0123456789abcdef", 4096) -- 64 KiB
    local total, want = 0, 24 * 1024 * 1024
    c:settimeout(0)
    local stalled_since
    local deadline = socket.gettime() + 20
    while total < want and socket.gettime() < deadline do
      -- the stream is the block repeated; resume it where the last send stopped
      local off = total % #block
      local n, err, part = c:send(block, off + 1)
      local sent = (n or part or off) - off
      total = total + sent
      if sent == 0 then
        stalled_since = stalled_since or socket.gettime()
        if socket.gettime() - stalled_since > 0.5 then break end
        socket.select(nil, { c }, 0.05)
      else
        stalled_since = nil
      end
    end
    assert.is_true(total < want, "the client was never held back")
    assert.is_nil(proxy:stderr():match("output buffer"), proxy:stderr())
    -- now the upstream reads: every byte arrives, in order
    up:settimeout(5)
    local got = 0
    local ok = true
    while got < total do
      local chunk, err, part = up:receive(math.min(#block, total - got))
      chunk = chunk or part
      if not chunk or #chunk == 0 then ok = false break end
      local off = got % #block
      if chunk ~= (block .. block):sub(off + 1, off + #chunk) then
        ok = false
        break
      end
      got = got + #chunk
    end
    assert.is_true(ok, "relayed bytes were lost or reordered at " .. got)
    assert.are.equal(total, got)
    c:close()
    up:close()
    lsrv:close()
  end)

  it("relays redis-cli and redis-benchmark to examples/redis.lua", function()
    if os.execute("command -v redis-cli >/dev/null 2>&1") ~= true then
      pending("redis-cli is not installed")
      return
    end
    local redis = H.start("examples/redis.lua")
    local proxy = proxy_to(redis.addrs[1])
    local function cli(...)
      local cmd = { "timeout 20 redis-cli -h 127.0.0.1 -p", tostring(proxy.port) }
      for _, a in ipairs({ ... }) do cmd[#cmd + 1] = H.quote(a) end
      local f = assert(io.popen(table.concat(cmd, " ") .. " 2>&1"))
      local out = f:read("a")
      f:close()
      return (out:gsub("\n$", ""))
    end
    assert.are.equal("PONG", cli("ping"))
    assert.are.equal("OK", cli("set", "relayed", "through the proxy"))
    assert.are.equal("through the proxy", cli("get", "relayed"))
    assert.are.equal("5", cli("incrby", "n", "5"))
    -- one redis-cli run with many commands on one connection
    local f = assert(io.popen("printf 'INCR n\\nINCR n\\nGET n\\n' | timeout 20 redis-cli -p " ..
      proxy.port .. " 2>&1"))
    assert.are.equal("6\n7\n7\n", f:read("a"))
    f:close()
    -- the key went to the server behind the proxy
    local direct = redis:connect()
    H.send(direct, "GET relayed\r\n")
    assert.are.equal("$17", H.line(direct))
    assert.are.equal("through the proxy", H.line(direct))
    -- 20 clients pipelining through the relay; every reply arrives
    f = assert(io.popen("timeout 60 redis-benchmark -p " .. proxy.port ..
      " -q -n 20000 -c 20 -P 8 -t set,get 2>&1"))
    local out = f:read("a")
    f:close()
    assert.matches("SET: [%d%.]+ requests per second", out)
    assert.matches("GET: [%d%.]+ requests per second", out)
    assert.are.equal("1", cli("exists", "key:__rand_int__"))
    -- byte counts: the proxy logged a line per client, with both directions
    local up, down = proxy:expect_log("client %d+ %(.-%): (%d+) bytes up, (%d+) bytes down")
    assert.is_true(tonumber(up) > 0 and tonumber(down) > 0)
  end)

  it("closes the client when the upstream is down, and says why", function()
    local probe = assert(socket.bind("127.0.0.1", 0))
    local _, dead = probe:getsockname()
    probe:close()
    local proxy = proxy_to("127.0.0.1:" .. dead)
    local c = proxy:connect()
    assert.are.equal("closed", H.read_to_close(c))
    proxy:expect_log("upstream 127%.0%.0%.1:" .. dead .. ": connection refused")
  end)

  it("refuses a malformed upstream at start-up", function()
    local rc, _, err = H.run({ H.root .. "/examples/proxy.lua", "nonsense" })
    assert.are.equal(2, rc)
    assert.truthy(err:match("upstream must be host:port"), err)
  end)
end)
