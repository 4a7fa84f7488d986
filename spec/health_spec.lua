-- spec/health_spec.lua: health checks answered by the core, and
-- stop_grace, without a balancer (spec/deploy_spec.lua has HAProxy).
package.path = "spec/?.lua;" .. package.path
local H = require "helper"

-- One HTTP request to the health listener: the status line and the body.
local function check(addr)
  local c = assert(H.connect_addr(addr, 3))
  H.send(c, "GET /health HTTP/1.0\r\n\r\n")
  local reply = H.read_all(c, nil, 3)
  c:close()
  return reply:match("^(HTTP/1%.0 %d+ [^\r]*)\r\n"), reply:match("\r\n\r\n(.*)$")
end

local SCRIPT = [[
local hs = require "hotsock"
return {
  framing = "line",
  on_message = function(conn, line)
    conn:send(line, " stopping=", tostring(hs.stopping()), " health_checks=",
      tostring(hs.stats().health_checks), " accepted=", tostring(hs.stats().accepted), "\n")
  end,
}
]]

describe("health listener", function()
  after_each(H.cleanup)

  it("answers 200 up while serving, in C: never the script, nor the client counters", function()
    local srv = H.start(H.write_script(SCRIPT),
      { args = { "--health", "127.0.0.1:0" }, expect_listeners = 2 })
    local health = srv.addrs[2]
    for _ = 1, 3 do
      local status, body = check(health)
      assert.are.equal("HTTP/1.0 200 OK", status)
      assert.are.equal("up\n", body)
    end
    -- a plain TCP check (connect, close) is answered too and harms nothing
    local c = assert(H.connect_addr(health, 3))
    c:close()
    local app = srv:connect()
    H.send(app, "hi\n")
    assert.are.equal("hi stopping=false health_checks=4 accepted=1", H.line(app))
    assert.are.equal(0, srv:stop())
  end)

  it("with stop_grace, says draining while the server still serves, then stops", function()
    local srv = H.start(H.write_script(SCRIPT),
      { args = { "--health", "127.0.0.1:0", "--stop-grace", "1500" }, expect_listeners = 2 })
    local health = srv.addrs[2]
    local before = srv:connect()
    srv:signal("TERM")
    srv:expect_log("SIGTERM: health checks say draining; stopping in 1500 ms", 3, true)
    local status, body = check(health)
    assert.are.equal("HTTP/1.0 503 Service Unavailable", status)
    assert.are.equal("draining\n", body)
    -- the old client and a new one are both still served meanwhile
    H.send(before, "old\n")
    assert.truthy(H.line(before):find("^old stopping=true"))
    local after = srv:connect()
    H.send(after, "new\n")
    assert.truthy(H.line(after):find("^new stopping=true"))
    srv:expect_log("stop_grace over: stopping", 5, true)
    assert.are.equal(0, srv:wait_exit(10))
  end)

  it("a second signal during stop_grace stops at once", function()
    local srv = H.start(H.write_script(SCRIPT),
      { args = { "--health", "127.0.0.1:0", "--stop-grace", "60000" }, expect_listeners = 2 })
    srv:signal("TERM")
    srv:expect_log("stopping in 60000 ms (stop_grace)", 3, true)
    srv:signal("TERM")
    assert.are.equal(0, srv:wait_exit(5))
  end)

  it("health = true in a listener table; it cannot be TLS", function()
    local src = [[
return {
  listen = { "127.0.0.1:0", { addr = "127.0.0.1:0", health = true } },
  framing = "line",
  on_message = function(conn, line) conn:send(line, "\n") end,
}
]]
    local srv = H.start(H.write_script(src), { listen = false, expect_listeners = 2 })
    assert.are.equal("HTTP/1.0 200 OK", (check(srv.addrs[2])))
    assert.are.equal(0, srv:stop())
    local bad = H.write_script([[
return {
  listen = { { addr = "127.0.0.1:0", health = true, tls = { cert = "c.pem", key = "k.pem" } } },
  on_message = function() end,
}
]])
    local code, _, err = H.run({ "--check", bad })
    assert.are.equal(2, code)
    assert.truthy(err:find("health listener is plain", 1, true), err)
  end)
end)
